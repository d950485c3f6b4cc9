//! kvip-lab: a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager built from the `k8s.io/kubernetes` module) and a
//! layer-2 network of nodes as network namespaces on one machine, shaped
//! like a kubeadm cluster: the real kube-proxy on every node, the lab
//! playing the kubelet. kvip's end-to-end tests run here.

pub mod bench;
pub mod cloud_provider;
pub mod cluster;
pub mod commands;
pub mod control_plane;
pub mod demo;
pub mod deploy;
pub mod endpoint;
pub mod forge;
pub mod ipvs;
pub mod kube_vip;
pub mod labd;
pub mod layout;
pub mod netns;
pub mod network;
pub mod pki;
pub mod process;
pub mod responder;
pub mod state;
pub mod toolchain;
