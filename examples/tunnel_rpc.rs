//! Calling a JSON-RPC service that listens only on a remote machine's loopback, with
//! hyper's HTTP client, through the SSH connection: `connect_sock` is the client's
//! connector, so no port is opened and no `ssh -L` runs beside the script.
//!
//! `cargo run --example tunnel_rpc` needs nothing installed: it starts an SSH server
//! embedded in the example (`leadpipe_test_server::TestServer`, on loopback) and a small
//! JSON-RPC service on 127.0.0.1 (methods `add` and `echo`), and calls it through the
//! embedded server. With a real host, `cargo run --example tunnel_rpc -- user@host PORT [METHOD
//! [PARAMS]]` calls METHOD (default `add`) with PARAMS (JSON, default `[2, 3]`) on the
//! JSON-RPC-over-HTTP service listening on the host's 127.0.0.1:PORT.

use std::error::Error;

use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Response,
    body::{Bytes, Incoming},
    client::conn::http1::SendRequest,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use leadpipe::SshMachine;
use leadpipe_test_server::TestServer;
use serde_json::{Value, json};

type BoxError = Box<dyn Error + Send + Sync>;

/// A JSON-RPC 2.0 client over HTTP/1.1 whose connections are `direct-tcpip` channels of
/// one SSH connection. One HTTP connection (one channel) is kept for every call, and
/// replaced when the service closes it.
struct RpcClient {
    machine: SshMachine,
    port: u16,
    http: Option<SendRequest<Full<Bytes>>>,
    next_id: u64,
}

impl RpcClient {
    fn new(machine: SshMachine, port: u16) -> RpcClient {
        RpcClient {
            machine,
            port,
            http: None,
            next_id: 1,
        }
    }

    /// The connector: a socket to the service's port, as the remote machine sees it.
    async fn connection(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, BoxError> {
        if self.http.as_ref().is_none_or(SendRequest::is_closed) {
            let socket = self.machine.connect_sock(self.port).await?;
            let (http, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(socket)).await?;
            // The connection's own task: it moves the bytes while calls wait for answers.
            tokio::spawn(connection);
            self.http = Some(http);
        }
        let http = self.http.as_mut().expect("just connected");
        http.ready().await?;
        Ok(http)
    }

    /// Calls `method` with `params`; the call's `result`, or its `error` as an error.
    async fn call(&mut self, method: &str, params: Value) -> Result<Value, BoxError> {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id});
        let request = Request::post("/")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let response = self.connection().await?.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let reply: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{method}: HTTP {status}, not a JSON-RPC answer: {e}"))?;
        if let Some(error) = reply.get("error") {
            return Err(format!("{method} failed: {error}").into());
        }
        Ok(reply["result"].clone())
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The embedded server and service, when used, serve as long as they are held.
    let (machine, port, _server) = match args.as_slice() {
        [destination, port, ..] => {
            println!("connecting to {destination}");
            let machine = SshMachine::connect(destination).await?;
            (machine, port.parse::<u16>()?, None)
        }
        [] => {
            let port = start_rpc_service().await?;
            let server = TestServer::start().await?;
            println!(
                "no host given: an SSH server embedded in the example on {}, and a JSON-RPC \
                 service on 127.0.0.1:{port}; `-- user@host PORT` uses a real host",
                server.addr()
            );
            (server.connect().await?, port, Some(server))
        }
        [_] => return Err("usage: tunnel_rpc [user@host PORT [METHOD [PARAMS]]]".into()),
    };
    println!("connected to {}", machine.name());
    let mut rpc = RpcClient::new(machine, port);

    let method = args.get(2).map_or("add", String::as_str);
    let params: Value = match args.get(3) {
        Some(text) => serde_json::from_str(text)?,
        None => json!([2, 3]),
    };
    let result = rpc.call(method, params.clone()).await?;
    println!("{method}({params}) -> {result}");
    if args.is_empty() {
        // The embedded service's answers are known: the example checks them.
        assert_eq!(result, json!(5));
        // More calls on the same channel, and an error the service reports.
        let echoed = rpc.call("echo", json!({"through": "ssh"})).await?;
        println!("echo({{\"through\": \"ssh\"}}) -> {echoed}");
        assert_eq!(echoed, json!({"through": "ssh"}));
        let big: Vec<u64> = (1..=1000).collect();
        let sum = rpc.call("add", json!(big)).await?;
        println!("add(1..=1000) -> {sum}");
        assert_eq!(sum, json!(500500));
        let error = rpc.call("divide", json!([1, 0])).await.unwrap_err();
        println!("{error}");
        assert!(error.to_string().contains("method not found"), "{error}");
    }
    Ok(())
}

/// A JSON-RPC 2.0 service over HTTP on a free port of 127.0.0.1, answering `add` (the sum
/// of an array of integers) and `echo` (its params). It plays the remote service: the SSH
/// server reaches it on its own loopback.
async fn start_rpc_service() -> std::io::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    });
    Ok(port)
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let body = request.into_body().collect().await?.to_bytes();
    let reply = match serde_json::from_slice::<Value>(&body) {
        Ok(call) => dispatch(&call),
        Err(e) => json!({
            "jsonrpc": "2.0",
            "error": {"code": -32700, "message": format!("parse error: {e}")},
            "id": null,
        }),
    };
    let mut response = Response::new(Full::new(Bytes::from(reply.to_string())));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn dispatch(call: &Value) -> Value {
    let params = &call["params"];
    let result = match call["method"].as_str() {
        Some("add") => params
            .as_array()
            .and_then(|numbers| numbers.iter().map(Value::as_i64).sum::<Option<i64>>())
            .map(|sum| json!(sum))
            .ok_or(json!({"code": -32602, "message": "add takes an array of integers"})),
        Some("echo") => Ok(params.clone()),
        _ => Err(json!({"code": -32601, "message": "method not found"})),
    };
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "result": result, "id": call["id"]}),
        Err(error) => json!({"jsonrpc": "2.0", "error": error, "id": call["id"]}),
    }
}
