//! The bulk baseline: a bare tokio-rustls stream, TLS 1.3 with AES-128-GCM (the suite the data
//! path negotiates) and both sides authenticated by certificates from a throwaway CA, in this
//! process: over loopback, or over any pair of sockets (the emulated link).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A certificate and its key.
type Identity = (CertificateDer<'static>, PrivateKeyDer<'static>);

/// A throwaway CA, and a server and a client identity it signed.
fn certs() -> Result<(rustls::RootCertStore, Identity, Identity)> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let leaf = |name: &str| -> Result<Identity> {
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])?.signed_by(&key, &ca, &ca_key)?;
        Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))))
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone())?;
    Ok((roots, leaf("localhost")?, leaf("client")?))
}

/// Sends `bytes` over one mutual-TLS stream on loopback; returns MB/s (10^6 bytes per second)
/// and the CPU seconds this process spent (both ends).
pub fn throughput(bytes: u64) -> Result<(f64, f64)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    throughput_over(bytes, listener, move || Ok(std::net::TcpStream::connect(addr)?))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites = vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256];
    Arc::new(p)
}

/// [`throughput`] with the server accepting on `listener` and the client's socket made by
/// `connect` (which may open it in another network namespace).
pub fn throughput_over(
    bytes: u64,
    listener: std::net::TcpListener,
    connect: impl FnOnce() -> Result<std::net::TcpStream>,
) -> Result<(f64, f64)> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let client_tcp = connect()?;
    rt.block_on(async move {
        let (roots, (scert, skey), (ccert, ckey)) = certs()?;
        let roots = Arc::new(roots);
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider()).build()?;
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![scert], skey)?;
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots.as_ref().clone())
            .with_client_auth_cert(vec![ccert], ckey)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let sender = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            let mut tls = acceptor.accept(tcp).await?;
            let buf = vec![0x5au8; 256 * 1024];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                tls.write_all(&buf[..n]).await?;
                left -= n as u64;
            }
            tls.shutdown().await?;
            anyhow::Ok(())
        });
        client_tcp.set_nonblocking(true)?;
        let tcp = tokio::net::TcpStream::from_std(client_tcp)?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("localhost")?;
        let mut tls = connector.connect(name, tcp).await.context("baseline TLS handshake")?;
        let cpu = super::cpu::seconds(None)?;
        let start = Instant::now();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        while got < bytes {
            let n = tls.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        let secs = start.elapsed().as_secs_f64();
        let cpu = super::cpu::seconds(None)? - cpu;
        sender.await??;
        anyhow::ensure!(got == bytes, "baseline stream ended after {got} of {bytes} bytes");
        Ok((bytes as f64 / secs / 1e6, cpu))
    })
}
