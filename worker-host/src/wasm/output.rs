//! The guest's stdout and stderr, streamed into the order's log pipeline.
//!
//! wasmtime's in-memory pipes either grow without bound or fail the guest's write when
//! full; neither suits a log of any size. [`GuestOutput`] hands each write to the same
//! bounded channel the shell runner uses, so the guest waits (asynchronously, through WASI's
//! readiness protocol) while the log writer is behind, and memory stays bounded: at most
//! one chunk per write in flight, in the channel's few slots. stdout and stderr share the
//! channel, so they are merged in arrival order like a command's pipes.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio_util::sync::PollSender;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

use crate::log_sink::{CHUNK_SIZE, LogSender};

/// A guest output stream (stdout or stderr) writing into the log pipeline.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    log: LogSender,
}

impl GuestOutput {
    /// A stream into `log`.
    pub fn new(log: LogSender) -> Self {
        GuestOutput { log }
    }

    fn handle(&self) -> OutputHandle {
        OutputHandle {
            log: self.log.clone(),
            slot: PollSender::new(self.log.channel()),
            reserved: false,
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.handle())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.handle())
    }
}

/// One open handle on a guest stream: a write is accepted once a channel slot is reserved.
struct OutputHandle {
    log: LogSender,
    slot: PollSender<Vec<u8>>,
    /// Whether `slot` holds a reserved place in the channel.
    reserved: bool,
}

impl OutputHandle {
    /// Copies `bytes` (at most [`CHUNK_SIZE`]) into a pooled buffer and sends it in the
    /// reserved slot.
    fn send(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        let mut chunk = self.log.buffer();
        chunk.extend_from_slice(bytes);
        self.reserved = false;
        self.slot.send_item(chunk).map_err(|_| StreamError::Closed)
    }

    /// Reserves a place in the channel; `Err` when the pipeline is gone.
    fn poll_reserve(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        if self.reserved {
            return Poll::Ready(Ok(()));
        }
        let reserved = ready!(self.slot.poll_reserve(cx)).map_err(|_| ());
        self.reserved = reserved.is_ok();
        Poll::Ready(reserved)
    }
}

#[async_trait::async_trait]
impl Pollable for OutputHandle {
    async fn ready(&mut self) {
        // A closed pipeline shows up as `Closed` from the next `check_write`.
        let _ = std::future::poll_fn(|cx| self.poll_reserve(cx)).await;
    }
}

impl OutputStream for OutputHandle {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.len() > CHUNK_SIZE {
            return Err(StreamError::trap("write larger than check_write allowed"));
        }
        if bytes.is_empty() {
            return Ok(());
        }
        if !self.reserved {
            return Err(StreamError::trap("write without a permit from check_write"));
        }
        self.send(&bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Every write is already on its way to the log writer.
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        if self.slot.is_closed() {
            return Err(StreamError::Closed);
        }
        // A slot reserved by `ready` takes one write; without one the guest waits.
        Ok(if self.reserved { CHUNK_SIZE } else { 0 })
    }
}

impl AsyncWrite for OutputHandle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if ready!(self.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        let len = buf.len().min(CHUNK_SIZE);
        Poll::Ready(
            self.send(&buf[..len])
                .map(|()| len)
                .map_err(|_| std::io::ErrorKind::BrokenPipe.into()),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::log_sink::LogSink;

    #[tokio::test]
    async fn writes_through_either_interface_reach_the_log_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::create(dir.path());
        let output = GuestOutput::new(sink.sender());
        let mut p2 = output.p2_stream();
        p2.write_ready().await.unwrap();
        p2.write(Bytes::from_static(b"one\n")).unwrap();
        let mut writer = Box::into_pin(output.async_stream());
        writer.write_all(b"two\n").await.unwrap();
        p2.blocking_write_and_flush(Bytes::from_static(b"three\n"))
            .await
            .unwrap();
        drop((p2, writer, output));
        let log = sink.finish().await.unwrap();
        assert_eq!(log.tail, "one\ntwo\nthree\n");
    }

    #[tokio::test]
    async fn an_unreserved_handle_asks_the_guest_to_wait() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::create(dir.path());
        let mut p2 = GuestOutput::new(sink.sender()).p2_stream();
        assert_eq!(p2.check_write().unwrap(), 0);
        p2.ready().await;
        assert_eq!(p2.check_write().unwrap(), CHUNK_SIZE);
    }
}
