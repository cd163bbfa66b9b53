//! The bulk baseline: a bare tokio-rustls stream, TLS 1.3 with both sides authenticated by
//! certificates from a throwaway CA, over loopback, in this process.

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

/// Sends `bytes` over one mutual-TLS stream on loopback; returns MB/s (10^6 bytes per second).
pub fn throughput(bytes: u64) -> Result<f64> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let (roots, (scert, skey), (ccert, ckey)) = certs()?;
        let roots = Arc::new(roots);
        let verifier = rustls::server::WebPkiClientVerifier::builder(roots.clone()).build()?;
        let server =
            rustls::ServerConfig::builder().with_client_cert_verifier(verifier).with_single_cert(vec![scert], skey)?;
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots.as_ref().clone())
            .with_client_auth_cert(vec![ccert], ckey)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let sender = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
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
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost")?;
        let mut tls = connector.connect(name, tcp).await.context("baseline TLS handshake")?;
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
        sender.await??;
        anyhow::ensure!(got == bytes, "baseline stream ended after {got} of {bytes} bytes");
        Ok(bytes as f64 / secs / 1e6)
    })
}
