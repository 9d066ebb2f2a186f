//! Hosted providers are HTTPS: the router verifies their certificate against the platform's
//! trusted roots (in a pod, the image's CA bundle; here `SSL_CERT_FILE`, which the platform
//! verifier reads on Linux), and speaks HTTP/2 where the provider offers it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use agent_operator::api::llm_provider::ProviderType;
use axum::http::Version;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::fake_provider::{Behaviour, FakeProvider};
use crate::harness::{
    Link, RouterProcess, chat_request, content, quick_settings, streamed_content,
};
use crate::net::free_port;

/// A certificate authority and a server certificate for `localhost` it signed, as PEM files in
/// a fresh folder: the authority's certificate, the server's, and the server's key.
fn certificates() -> (PathBuf, PathBuf, PathBuf) {
    let name = format!("router-tls-{}-{}", std::process::id(), free_port());
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("extensions");
    let openssl = |args: &[&str]| {
        let made = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("openssl runs");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
    };
    let new_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    // Each authority its own name: a verifier picks the issuer by name.
    let authority = format!("/CN={name}");
    let ca = format!("req -x509 -days 1 {new_key} -keyout ca-key.pem -out ca.pem -subj");
    openssl(&[ca.split(' ').collect::<Vec<_>>(), vec![authority.as_str()]].concat());
    let request = format!("req {new_key} -keyout key.pem -out server.csr -subj /CN=localhost");
    openssl(&request.split(' ').collect::<Vec<_>>());
    openssl(
        &"x509 -req -days 1 -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -extfile server.ext -out cert.pem"
            .split(' ')
            .collect::<Vec<_>>(),
    );
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

/// A TLS fake offering `alpn` (in order of preference) with the certificate at `cert`.
async fn https_fake(cert: &Path, key: &Path, alpn: &[&[u8]]) -> FakeProvider {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("certificate file")
        .collect::<Result<_, _>>()
        .expect("certificate");
    let key = PrivateKeyDer::from_pem_file(key).expect("key");
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    FakeProvider::start_tls(Behaviour::default(), Arc::new(tls)).await
}

async fn router_trusting(fake: &FakeProvider, ca_file: &Path) -> RouterProcess {
    let link = Link::new("hosted", ProviderType::OpenAI, fake.https_endpoint());
    let ca = ca_file.display().to_string();
    RouterProcess::start_in_env(
        &[link],
        &quick_settings(),
        None,
        (&["--log-level", "debug"], &[("SSL_CERT_FILE", ca.as_str())]),
    )
    .await
}

#[tokio::test]
async fn an_https_provider_is_verified_and_spoken_to_over_http2() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (ca, cert, key) = certificates();
    let fake = https_fake(&cert, &key, &[b"h2", b"http/1.1"]).await;
    let router = router_trusting(&fake, &ca).await;

    let (status, answer) = router.chat(&chat_request(false)).await;
    assert_eq!(status, 200, "{answer}\n{}", router.logs());
    assert_eq!(content(&answer), "Hello from the fake provider");
    let (status, events) = router.stream(&chat_request(true)).await;
    assert_eq!(status, 200);
    assert_eq!(streamed_content(&events), "Hello from the fake provider");

    let chats = fake.chats();
    assert_eq!(chats.len(), 2);
    for received in &chats {
        assert_eq!(received.version, Version::HTTP_2);
        assert!(
            received
                .headers
                .get("authorization")
                .is_some_and(|v| v.to_str().is_ok_and(|v| v.starts_with("Bearer sk-hosted"))),
            "the key reaches the provider"
        );
    }
}

#[tokio::test]
async fn an_https_provider_offering_only_http1_is_spoken_to_over_http1() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (ca, cert, key) = certificates();
    let fake = https_fake(&cert, &key, &[b"http/1.1"]).await;
    let router = router_trusting(&fake, &ca).await;

    let (status, answer) = router.chat(&chat_request(false)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        fake.chats().pop().map(|r| r.version),
        Some(Version::HTTP_11)
    );
}

#[tokio::test]
async fn a_certificate_the_platform_does_not_trust_is_refused() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (_, cert, key) = certificates();
    let fake = https_fake(&cert, &key, &[b"h2", b"http/1.1"]).await;
    // The router trusts another authority, not the one that signed the provider's certificate.
    let (other, _, _) = certificates();
    let router = router_trusting(&fake, &other).await;

    let (status, answer) = router.chat(&chat_request(false)).await;
    assert_eq!(status, 502, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("hosted:unreachable")),
        "{answer}"
    );
    assert!(
        fake.chats().is_empty(),
        "no request reached an untrusted server"
    );
    assert!(
        router
            .logs_soon("invalid peer certificate: UnknownIssuer")
            .await,
        "the certificate, not the connection, was refused: {}",
        router.logs()
    );
}
