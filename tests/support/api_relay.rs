//! A TCP relay between one client and the API server. Cutting it severs that client's
//! connections, long-running watches included, and refuses new ones, while the API server stays
//! up for every other client: the fault suite uses it to make the operator fall behind the
//! cluster on purpose.
//!
//! TLS passes through untouched: the API server's certificate names 127.0.0.1, which the relay
//! also listens on, so a kubeconfig that only changes the port still verifies it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kube::config::Kubeconfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct ApiRelay {
    pub address: SocketAddr,
    cut: watch::Sender<bool>,
    /// Connections being relayed now.
    open: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl ApiRelay {
    /// Relays a free loopback port to the API server of the admin kubeconfig.
    pub async fn start() -> ApiRelay {
        let upstream = api_server_address();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let address = listener.local_addr().expect("relay address");
        let (cut, _) = watch::channel(false);
        let cut_seen = cut.subscribe();
        let open = Arc::new(AtomicUsize::new(0));
        let counted = open.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                // Accepted and closed at once while cut: the client sees the API refuse it.
                if *cut_seen.borrow() {
                    continue;
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let counted = counted.clone();
                let cut_seen = cut_seen.clone();
                tokio::spawn(async move {
                    relay(client, upstream, cut_seen).await;
                    counted.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        ApiRelay {
            address,
            cut,
            open,
            accept,
        }
    }

    /// Closes every relayed connection and refuses new ones until [`ApiRelay::restore`];
    /// returns once the last one is closed, so the client sees nothing from then on.
    pub async fn cut(&self) {
        self.cut.send_replace(true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.open.load(Ordering::SeqCst) > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "relayed connections still open 10 s after the cut"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }

    /// The admin kubeconfig with its server moved to the relay, written under `tag`.
    pub fn kubeconfig(&self, tag: &str) -> PathBuf {
        let mut kubeconfig =
            Kubeconfig::read_from(super::kubeconfig_path()).expect("the admin kubeconfig");
        for named in &mut kubeconfig.clusters {
            if let Some(cluster) = named.cluster.as_mut() {
                cluster.server = Some(format!("https://{}", self.address));
            }
        }
        super::write_kubeconfig(&kubeconfig, &format!("{tag}-relayed"))
    }
}

impl Drop for ApiRelay {
    fn drop(&mut self) {
        self.cut.send_replace(true);
        self.accept.abort();
    }
}

/// Copies both ways until either side closes or the relay is cut; dropping both sockets then
/// ends the connection for the client.
async fn relay(mut client: TcpStream, upstream: SocketAddr, mut cut: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.wait_for(|cut| *cut) => {}
    }
}

/// The host and port of the admin kubeconfig's API server.
fn api_server_address() -> SocketAddr {
    let kubeconfig = Kubeconfig::read_from(super::kubeconfig_path()).expect("the admin kubeconfig");
    let server = kubeconfig
        .clusters
        .iter()
        .find_map(|named| named.cluster.as_ref()?.server.clone())
        .expect("the kubeconfig names a server");
    let authority = server
        .strip_prefix("https://")
        .unwrap_or(&server)
        .trim_end_matches('/');
    authority
        .parse()
        .unwrap_or_else(|_| panic!("the API server {server} is not an address and port"))
}
