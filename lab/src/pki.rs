//! The lab's credentials: a CA, the API servers' serving certificate (valid
//! for every address a client may use, VIPs included), the service-account
//! signing key, and static tokens for the admin and the controller manager.

use crate::layout::{self, NodeLayout};
use anyhow::Context;
use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Files written by [`create`].
pub struct Pki {
    /// CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// API server certificate (PEM).
    pub server_cert: PathBuf,
    /// API server key (PEM).
    pub server_key: PathBuf,
    /// Service-account signing key (PEM).
    pub sa_key: PathBuf,
    /// Its public half, which the API server verifies tokens with.
    pub sa_pub: PathBuf,
    /// kube-apiserver `--token-auth-file`.
    pub token_file: PathBuf,
    /// The admin's bearer token.
    pub admin_token: String,
    /// The controller manager's bearer token.
    pub controller_manager_token: String,
}

impl Pki {
    /// Paths and tokens of credentials already in `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map(|s| s.trim().to_string())
                .with_context(|| format!("reading {}", dir.join(name).display()))
        };
        Ok(Self {
            ca_cert: dir.join("ca.crt"),
            server_cert: dir.join("apiserver.crt"),
            server_key: dir.join("apiserver.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
            token_file: dir.join("tokens.csv"),
            admin_token: read("admin.token")?,
            controller_manager_token: read("kcm.token")?,
        })
    }
}

fn token() -> String {
    let mut rng = rand::rng();
    (0..32)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// Every address clients may use to reach an API server.
fn server_addresses(nodes: &[NodeLayout]) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(layout::KUBERNETES_SERVICE_IP),
        IpAddr::from(layout::INFRA_IPV4),
    ];
    for n in nodes {
        ips.push(n.ipv4.into());
        if let Some(v6) = n.ipv6 {
            ips.push(v6.into());
        }
    }
    // The control-plane VIP may be any address of the VIP ranges.
    let (first, last) = layout::VIP_RANGE4;
    ips.extend(
        (u32::from(first)..=u32::from(last)).map(|a| IpAddr::from(std::net::Ipv4Addr::from(a))),
    );
    let (first, last) = layout::VIP_RANGE6;
    ips.extend(
        (u128::from(first)..=u128::from(last)).map(|a| IpAddr::from(std::net::Ipv6Addr::from(a))),
    );
    ips
}

/// Creates the credentials in `dir`.
pub fn create(dir: &Path, nodes: &[NodeLayout]) -> anyhow::Result<Pki> {
    std::fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kvip-lab-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
        "localhost".to_string(),
    ])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params
        .subject_alt_names
        .extend(server_addresses(nodes).into_iter().map(SanType::IpAddress));
    let server_cert = params.signed_by(&server_key, &issuer)?;

    let sa_key = KeyPair::generate()?;
    let admin_token = token();
    let kcm_token = token();
    let pki = Pki {
        ca_cert: dir.join("ca.crt"),
        server_cert: dir.join("apiserver.crt"),
        server_key: dir.join("apiserver.key"),
        sa_key: dir.join("sa.key"),
        sa_pub: dir.join("sa.pub"),
        token_file: dir.join("tokens.csv"),
        admin_token,
        controller_manager_token: kcm_token,
    };
    std::fs::write(&pki.ca_cert, ca_cert.pem())?;
    std::fs::write(&pki.server_cert, server_cert.pem())?;
    std::fs::write(&pki.server_key, server_key.serialize_pem())?;
    std::fs::write(&pki.sa_key, sa_key.serialize_pem())?;
    std::fs::write(&pki.sa_pub, sa_key.public_key_pem())?;
    std::fs::write(dir.join("admin.token"), &pki.admin_token)?;
    std::fs::write(dir.join("kcm.token"), &pki.controller_manager_token)?;
    std::fs::write(
        &pki.token_file,
        format!(
            "{},admin,admin-uid,\"system:masters\"\n{},system:kube-controller-manager,kcm-uid,\"system:masters\"\n",
            pki.admin_token, pki.controller_manager_token
        ),
    )?;
    Ok(pki)
}

/// A kubeconfig for `server` with a bearer token and the lab CA.
pub fn kubeconfig(server: &str, ca_cert: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kvip-lab\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: kvip-lab\n  context:\n    cluster: kvip-lab\n    user: admin\ncurrent-context: kvip-lab\n",
        ca = ca_cert.display()
    )
}
