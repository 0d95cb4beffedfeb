//! The deployment's HTTP API as a stand-in on 127.0.0.1 (moto cannot run the function
//! behind an API): each request's SigV4 signature for `execute-api` is checked the way the
//! IAM authorizer would reject an unsigned one, and the request is handed, as the HTTP API
//! event, to the real init-job handler. A server of its own rather than wiremock's:
//! wiremock's responders are synchronous, and this one awaits the handler.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use sluice_aws::handlers::init_job;
use sluice_engine::Engine;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// An API Gateway HTTP API (v2) event; Lambda function URLs send the same shape.
/// The IAM user the stand-ins' requests come from (as API Gateway's IAM authorization
/// names it).
pub const ALICE: &str = "arn:aws:iam::123456789012:user/alice";

pub fn http_event(method: &str, body: &str, base64: bool) -> Value {
    json!({
        "version": "2.0", "routeKey": "POST /init", "rawPath": "/init", "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "abc.lambda-url.us-east-1.on.aws"},
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc", "domainName": "abc.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abc", "requestId": "id", "routeKey": "$default", "stage": "$default",
            "time": "27/Nov/2026:07:00:00 +0000", "timeEpoch": 1795762800000u64,
            "http": {"method": method, "path": "/init", "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.7", "userAgent": "curl/8.0"},
            "authorizer": {"iam": {
                "accessKey": "AKIAEXAMPLE", "accountId": "123456789012",
                "callerId": "AIDAEXAMPLE", "userArn": ALICE, "userId": "AIDAEXAMPLE"
            }}
        },
        "body": body, "isBase64Encoded": base64
    })
}

/// The stand-in, serving until the test ends.
pub struct HttpApi {
    /// `POST` jobs here (the stack's `InitEndpoint`).
    pub url: String,
    /// How many of the next signed requests get a 504 once init-job has answered, as API
    /// Gateway answers an integration that took longer than 30 s.
    pub cut: Arc<AtomicUsize>,
    /// Each signed request's body and init-job's answer to it.
    pub seen: Arc<Mutex<Vec<(Value, Value)>>>,
}

impl HttpApi {
    pub async fn start(engine: Arc<Engine>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/init", listener.local_addr().unwrap());
        let cut = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let gateway = Gateway {
            engine,
            cut: Arc::clone(&cut),
            seen: Arc::clone(&seen),
        };
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, gateway.clone()));
            }
        });
        HttpApi { url, cut, seen }
    }
}

#[derive(Clone)]
struct Gateway {
    engine: Arc<Engine>,
    cut: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(Value, Value)>>>,
}

/// Answers one request: 403 unless signed, else init-job's answer (or a 504 when cut).
async fn serve(socket: TcpStream, gateway: Gateway) {
    let engine = &gateway.engine;
    let (read, mut write) = socket.into_split();
    let mut reader = BufReader::new(read);
    let request = super::read_request(&mut reader).await.expect("a request");
    let authorization = request
        .headers
        .get("authorization")
        .cloned()
        .unwrap_or_default();
    let signed = authorization.starts_with("AWS4-HMAC-SHA256 Credential=")
        && authorization.contains("/execute-api/aws4_request")
        && authorization.contains("Signature=");
    let (status, reply) = if signed {
        let body = String::from_utf8(request.body).unwrap();
        let event = http_event("POST", &body, false);
        let answer = init_job::handle(engine, &event).await.unwrap();
        let status = answer["statusCode"].as_u64().unwrap();
        let reply = answer["body"].as_str().unwrap().to_owned();
        let parsed = serde_json::from_str(&reply).unwrap_or(Value::Null);
        let sent = serde_json::from_str(&body).unwrap_or(Value::Null);
        gateway.seen.lock().unwrap().push((sent, parsed));
        let cut = gateway
            .cut
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if cut {
            (
                504,
                r#"{"message":"Endpoint request timed out"}"#.to_owned(),
            )
        } else {
            (status, reply)
        }
    } else {
        (403, r#"{"message":"Forbidden"}"#.to_owned())
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        reply.len()
    );
    write.write_all(head.as_bytes()).await.unwrap();
    write.write_all(reply.as_bytes()).await.unwrap();
}
