//! The datasource's listener is held to the limits of every mkube listener
//! (it had none: `axum::serve` took every connection it was offered):
//! one address gets its share of connections, the rest wait unserved.

use std::sync::Arc;
use std::time::Duration;

use grafana_datasource::{MetricsStore, SqliteStore, sqlite::DEFAULT_RETENTION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Whether a malformed request on `stream` gets an answer within `within`
/// (a served connection answers 400; one held over the share, nothing).
async fn answered(stream: &mut TcpStream, within: Duration) -> bool {
    if stream.write_all(b"nonsense\r\n\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(n)) if n > 0
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_its_share_of_the_datasource() {
    let dir = std::env::temp_dir().join(format!("mkube-listener-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = SqliteStore::open(&dir.join("metrics.db"), DEFAULT_RETENTION).expect("open store");
    let store: Arc<dyn MetricsStore> = Arc::new(store);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(grafana_datasource::serve(
        listener,
        store,
        std::future::pending(),
    ));

    let share = rpc::server::DEFAULT_MAX_CONNECTIONS_PER_IP;
    let mut flood = Vec::new();
    for _ in 0..share + 20 {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(([127, 0, 0, 2], 0).into())
            .expect("bind 127.0.0.2");
        flood.push(socket.connect(addr).await.expect("connect"));
    }
    let mut served = 0;
    for s in &mut flood {
        if answered(s, Duration::from_millis(300)).await {
            served += 1;
        }
    }
    assert_eq!(served, share, "{} connections from one address", share + 20);
    let mut other = TcpStream::connect(addr).await.expect("connect");
    assert!(
        answered(&mut other, Duration::from_secs(5)).await,
        "another address is served"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
