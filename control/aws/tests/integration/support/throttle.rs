//! A proxy in front of moto that throttles a share of the AWS calls and delays the rest,
//! as AWS does under load: 400 `ThrottlingException` for JSON protocols (DynamoDB, SSM,
//! Step Functions...), 429 `TooManyRequestsException` for Lambda, 503 `SlowDown` for S3.
//! Each request is answered on its own connection (`connection: close`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The proxy, serving until the test ends.
pub struct ThrottleProxy {
    /// Point the AWS clients here.
    pub endpoint: String,
    /// Requests answered with a throttling error.
    pub throttled: Arc<AtomicU64>,
    /// Requests passed on to moto.
    pub passed: Arc<AtomicU64>,
}

impl ThrottleProxy {
    /// Throttles a `share` of the requests (0.0 to 1.0) and delays the others by up to
    /// `max_delay`, in front of the moto server at `AWS_ENDPOINT_URL`.
    pub async fn start(share: f64, max_delay: Duration) -> Self {
        let moto = std::env::var("AWS_ENDPOINT_URL").unwrap();
        let upstream = moto
            .strip_prefix("http://")
            .unwrap()
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let throttled = Arc::new(AtomicU64::new(0));
        let passed = Arc::new(AtomicU64::new(0));
        let (t, p) = (Arc::clone(&throttled), Arc::clone(&passed));
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (upstream, t, p) = (upstream.clone(), Arc::clone(&t), Arc::clone(&p));
                tokio::spawn(async move {
                    if fastrand::f64() < share {
                        t.fetch_add(1, Ordering::SeqCst);
                        throttle(socket).await;
                    } else {
                        p.fetch_add(1, Ordering::SeqCst);
                        let delay = max_delay.mul_f64(fastrand::f64());
                        tokio::time::sleep(delay).await;
                        forward(socket, &upstream).await;
                    }
                });
            }
        });
        ThrottleProxy {
            endpoint,
            throttled,
            passed,
        }
    }
}

/// Reads the request and answers it as an overloaded AWS service would.
async fn throttle(socket: TcpStream) {
    let (read, mut write) = socket.into_split();
    let Some(request) = super::read_request(&mut BufReader::new(read)).await else {
        return;
    };
    let (status, kind, content_type, body) = if request.headers.contains_key("x-amz-target") {
        let body = r#"{"__type":"ThrottlingException","message":"Rate exceeded (injected)"}"#;
        (
            400,
            "ThrottlingException",
            "application/x-amz-json-1.0",
            body,
        )
    } else if request.line.contains(" /2015-03-31/") {
        let body = r#"{"Type":"User","message":"Rate exceeded (injected)"}"#;
        (429, "TooManyRequestsException", "application/json", body)
    } else {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate. (injected)</Message></Error>";
        (503, "SlowDown", "application/xml", body)
    };
    let head = format!(
        "HTTP/1.1 {status} Throttled\r\ncontent-type: {content_type}\r\nx-amzn-errortype: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = write.write_all(head.as_bytes()).await;
    let _ = write.write_all(body.as_bytes()).await;
}

/// Passes the request to moto on a connection of its own and the whole answer back.
async fn forward(socket: TcpStream, upstream: &str) {
    let (read, mut write) = socket.into_split();
    let Some(request) = super::read_request(&mut BufReader::new(read)).await else {
        return;
    };
    let Ok(mut moto) = TcpStream::connect(upstream).await else {
        return;
    };
    let mut head = request.line.clone();
    for (name, value) in &request.headers {
        if name != "connection" {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("connection: close\r\n\r\n");
    if moto.write_all(head.as_bytes()).await.is_err()
        || moto.write_all(&request.body).await.is_err()
    {
        return;
    }
    let mut answer = Vec::new();
    if moto.read_to_end(&mut answer).await.is_err() {
        return;
    }
    // The answer's head says the connection closes: the client opens a new one next time.
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |at| at + 4);
    let (answer_head, answer_body) = answer.split_at(split);
    let answer_head = String::from_utf8_lossy(answer_head);
    let mut lines: Vec<&str> = answer_head
        .trim_end()
        .split("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    lines.push("connection: close");
    let head = format!("{}\r\n\r\n", lines.join("\r\n"));
    let _ = write.write_all(head.as_bytes()).await;
    let _ = write.write_all(answer_body).await;
}
