//! End to end: kvip's least privilege, enforced by the real API server.
//! kvip is deployed from its own manifests (the two-instance layout: one
//! ServiceAccount per role, with its RBAC and ValidatingAdmissionPolicy);
//! kvip itself must keep working under them. Then, with tokens the
//! TokenRequest API issues for kvip's accounts, writes kvip never makes are
//! tried and must be refused with 403 (by the policy where RBAC allows the
//! verb, by RBAC elsewhere), while the writes kvip does make must succeed
//! with the same token, so a token that does not work cannot pass the test.
//! Then the Helm chart's objects (`deploy/helm/kvip`, the same as kvip's
//! manifests) pass a server-side dry run. Last, the load balancer runs under
//! kube-vip's published RBAC instead (Leases updated, never patched) and
//! must keep serving.

mod support;

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;
use support::*;

const NS: &str = "rbac-e2e";
/// Where kvip runs: its accounts, instance Leases and control-plane Lease.
const KVIP_NS: &str = "kube-system";
const CP_VIP: &str = "10.77.0.199";
const VIP: &str = "10.77.0.120";
/// Another controller's Service (another loadBalancerClass): kvip never
/// touches it, so every write to it here is the test's own.
const TARGET: &str = "other-controllers";
/// A Service whose address its author set by hand.
const HAND_SET: &str = "hand-set";
/// The leader Lease kube-controller-manager holds with leader election on
/// (the lab runs it without, so the test puts one there as it would be).
const KCM_LEASE: &str = "kube-controller-manager";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kvip");

/// Runs `future` to completion on a runtime of its own.
fn block_on<F: Future>(future: F) -> Result<F::Output, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    Ok(rt.block_on(future))
}

async fn admin_config() -> Result<kube::Config, String> {
    let path = lab_env()?
        .get("KUBECONFIG")
        .cloned()
        .ok_or("kvip-lab env printed no KUBECONFIG")?;
    let kubeconfig =
        kube::config::Kubeconfig::read_from(&path).map_err(|e| format!("reading {path}: {e}"))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| format!("{path}: {e}"))
}

/// The lab's administrator.
async fn admin() -> Result<Client, String> {
    Client::try_from(admin_config().await?).map_err(|e| e.to_string())
}

/// A client holding a fresh token of ServiceAccount `account` in
/// [`KVIP_NS`], issued by the API server's TokenRequest API, and nothing else.
async fn as_account(account: &str) -> Result<Client, String> {
    let mut config = admin_config().await?;
    let admin = Client::try_from(config.clone()).map_err(|e| e.to_string())?;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin, KVIP_NS)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("TokenRequest for {KVIP_NS}/{account}: {e}"))?
        .status
        .map(|s| s.token)
        .ok_or("the TokenRequest came back without a token")?;
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    Client::try_from(config).map_err(|e| e.to_string())
}

/// Who the API server takes `client` for.
async fn username(client: &Client) -> Result<String, String> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| format!("SelfSubjectReview: {e}"))?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .ok_or_else(|| "SelfSubjectReview named nobody".to_string())
}

/// A token client for `account`, checked to be that account.
async fn account_client(account: &str) -> Result<Client, String> {
    let client = as_account(account).await?;
    let name = username(&client).await?;
    let want = format!("system:serviceaccount:{KVIP_NS}:{account}");
    ensure!(
        name == want,
        "the token of {account} authenticates as {name}"
    );
    Ok(client)
}

/// The write was refused with 403 by the admission policy `policy` (an
/// account's Lease policy has the account's name, its Service policy that
/// name with `-services`).
fn denied_by_policy<T>(what: &str, policy: &str, result: kube::Result<T>) -> Outcome {
    match result {
        Ok(_) => Err(format!("{what}: allowed despite the policy {policy}")),
        Err(kube::Error::Api(status))
            if status.code == 403
                && status
                    .message
                    .contains(&format!("ValidatingAdmissionPolicy '{policy}'")) =>
        {
            println!("    {what}: 403 {}", status.message);
            Ok(())
        }
        Err(e) => Err(format!(
            "{what}: refused, but not by the policy {policy}: {e}"
        )),
    }
}

/// The write was refused with 403 by RBAC (the verb is not granted there).
fn denied_by_rbac<T>(what: &str, account: &str, result: kube::Result<T>) -> Outcome {
    match result {
        Ok(_) => Err(format!("{what}: allowed for {account}")),
        Err(kube::Error::Api(status))
            if status.code == 403
                && status.message.contains("cannot")
                && !status.message.contains("ValidatingAdmissionPolicy") =>
        {
            println!("    {what}: 403 {}", status.message);
            Ok(())
        }
        Err(e) => Err(format!("{what}: refused, but not by RBAC: {e}")),
    }
}

/// The write succeeded (a positive control).
fn allowed<T>(what: &str, account: &str, result: kube::Result<T>) -> Result<T, String> {
    let value = result.map_err(|e| format!("{what}: refused for {account}: {e}"))?;
    println!("    {what}: allowed");
    Ok(value)
}

fn lease(namespace: &str, name: &str, holder: &str, labels: &[(&str, &str)]) -> Lease {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: (!labels.is_empty()).then_some(labels),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
    }
}

/// Replaces Lease `namespace/name` with `client`, naming `holder`, from a
/// fresh read by `admin`: the write carries the stored resourceVersion (a
/// Lease cannot be updated without one), and a 409 because its owner renewed
/// it meanwhile is retried, so what answers is admission, not the version check.
async fn take_over(
    admin: &Client,
    client: &Client,
    namespace: &str,
    name: &str,
    holder: &str,
) -> Result<kube::Result<Lease>, String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    for _ in 0..5 {
        let mut taken = read_lease(admin, namespace, name)
            .await?
            .ok_or(format!("no Lease {namespace}/{name}"))?;
        taken.metadata.managed_fields = None;
        if let Some(spec) = taken.spec.as_mut() {
            spec.holder_identity = Some(holder.to_string());
        }
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&taken))
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            other => return Ok(other),
        }
    }
    Err(format!(
        "{namespace}/{name} kept changing under five writes"
    ))
}

fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

fn carries_managed_by(lease: &Lease) -> bool {
    lease
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY.0))
        .is_some_and(|v| v == MANAGED_BY.1)
}

/// Lease `namespace/name` as the administrator reads it.
async fn read_lease(admin: &Client, namespace: &str, name: &str) -> Result<Option<Lease>, String> {
    Api::<Lease>::namespaced(admin.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| format!("reading Lease {namespace}/{name}: {e}"))
}

/// The Lease a component other than kvip holds, as it holds it: created by
/// the administrator when absent.
async fn kcm_lease(admin: &Client) -> Result<Lease, String> {
    let api: Api<Lease> = Api::namespaced(admin.clone(), "kube-system");
    if let Some(existing) = api.get_opt(KCM_LEASE).await.map_err(|e| e.to_string())? {
        return Ok(existing);
    }
    let lease = lease("kube-system", KCM_LEASE, "cp1_7f3c9a52", &[]);
    api.create(&PostParams::default(), &lease)
        .await
        .map_err(|e| format!("creating {KCM_LEASE}: {e}"))
}

/// SelfSubjectAccessReview: may `client` do `verb` on `resource`?
async fn may(
    client: &Client,
    verb: &str,
    resource: &str,
    namespace: &str,
    name: Option<&str>,
) -> Result<bool, String> {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (resource, None),
    };
    let group = match resource {
        "leases" => "coordination.k8s.io",
        "endpointslices" => "discovery.k8s.io",
        "servicecidrs" => "networking.k8s.io",
        _ => "",
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.to_string()),
                resource: Some(resource.to_string()),
                subresource,
                verb: Some(verb.to_string()),
                namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
                name: name.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| format!("SelfSubjectAccessReview: {e}"))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// One permission and whether the account holds it.
type Expectation<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, bool);

async fn check_permissions(account: &str, expected: &[Expectation<'_>]) -> Outcome {
    let client = account_client(account).await?;
    let mut wrong = Vec::new();
    for &(verb, resource, namespace, name, want) in expected {
        let got = may(&client, verb, resource, namespace, name).await?;
        if got != want {
            wrong.push(format!(
                "{verb} {resource} in {namespace:?} {name:?}: {got}, expected {want}"
            ));
        }
    }
    ensure!(wrong.is_empty(), "{account}: {}", wrong.join("; "));
    println!("    {account}: {} permissions as expected", expected.len());
    Ok(())
}

fn cp_manifest() -> Result<String, String> {
    let mut args = vec!["manifest", "all", "--role", "cp", "--address", CP_VIP];
    args.extend_from_slice(&TIMINGS);
    kvip(&args)
}

fn setup() -> Outcome {
    lab_ok(&["down"])?;
    lab_up()?;
    namespace(NS)?;
    let cp = temp_file("cp.yaml", &cp_manifest()?)?;
    lab_ok(&["deploy", &cp.display().to_string()])?;
    deploy_lb("lb.yaml", &[])?;
    wait_for(
        "a kvip instance Lease on every node and the control-plane Lease held",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let instances = ["cp1", "worker1", "worker2"]
                .iter()
                .all(|n| lease_holder(KVIP_NS, &format!("kvip-lb-{n}")).as_deref() == Some(*n));
            let cp = lease_holder(KVIP_NS, "plndr-cp-lock").is_some_and(|h| h == "cp1");
            (instances && cp).then_some(())
        },
    )?;
    // The API server loads a new policy from its informer: wait until it
    // refuses what it must, with a dry run that changes nothing either way.
    block_on(async {
        let lb = account_client("kvip-lb").await?;
        let api: Api<Lease> = Api::namespaced(lb.clone(), KVIP_NS);
        let dry = PostParams {
            dry_run: true,
            ..Default::default()
        };
        let probe = lease(KVIP_NS, "kube-scheduler", "worker1", &[]);
        let services: Api<Service> = Api::namespaced(lb, "default");
        let dry_patch = PatchParams {
            dry_run: true,
            ..Default::default()
        };
        let label =
            Patch::Merge(serde_json::json!({ "metadata": { "labels": { "rbac-e2e": "probe" } } }));
        let refused = |r: kube::Result<_>, policy: &str| {
            matches!(r, Err(kube::Error::Api(s))
                if s.message.contains(&format!("ValidatingAdmissionPolicy '{policy}'")))
        };
        for _ in 0..100 {
            if refused(api.create(&dry, &probe).await.map(|_| ()), "kvip-lb")
                && refused(
                    services
                        .patch("kubernetes", &dry_patch, &label)
                        .await
                        .map(|_| ()),
                    "kvip-lb-services",
                )
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(
            "the admission policies kvip-lb and kvip-lb-services are not in force after 10 s"
                .to_string(),
        )
    })?
}

/// kvip's own writes pass its RBAC and policy: status and vipHost, its
/// Leases (each carrying the managed-by label), Events.
fn kvip_works_under_its_own_policy() -> Outcome {
    apply(&lb_service(NS, "web", "Local", Some(VIP), "web"))?;
    lab_pod(NS, "web-1", "worker1", "web")?;
    probe_until(
        &format!("{VIP}:80"),
        Duration::from_secs(10),
        Duration::from_millis(50),
        |a| a == "worker1/web-1",
    )?;
    expect_status(NS, "web", VIP, "worker1")?;
    wait_for(
        "a VIPAnnounced Event on the Service",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || {
            kvip_events(NS, "web")
                .iter()
                .any(|(reason, _, _)| reason == "VIPAnnounced")
                .then_some(())
        },
    )?;
    block_on(async {
        let admin = admin().await?;
        for (namespace, name, by) in [
            (NS, "kubevip-web", "worker1"),
            (KVIP_NS, "kvip-lb-worker1", "worker1"),
            (KVIP_NS, "plndr-cp-lock", "cp1"),
        ] {
            let lease = read_lease(&admin, namespace, name)
                .await?
                .ok_or(format!("no Lease {namespace}/{name}"))?;
            ensure!(
                holder(&lease) == Some(by),
                "{namespace}/{name} held by {:?}",
                holder(&lease)
            );
            ensure!(
                carries_managed_by(&lease),
                "{namespace}/{name} lacks {}={}: {:?}",
                MANAGED_BY.0,
                MANAGED_BY.1,
                lease.metadata.labels
            );
        }
        Ok(())
    })?
}

/// What each account may do, as the API server's authorizer answers the
/// account itself: exactly the calls its role makes.
fn each_account_holds_only_its_role() -> Outcome {
    // The single-DaemonSet layout's account, applied without a DaemonSet.
    apply(&kvip(&["manifest", "rbac", "--role", "all"])?)?;
    block_on(async {
        check_permissions(
            "kvip-lb",
            &[
                ("list", "services", "", None, true),
                ("watch", "services", "", None, true),
                ("patch", "services", NS, None, true),
                ("patch", "services/status", NS, None, true),
                ("update", "services", NS, None, false),
                ("get", "services", NS, None, false),
                ("delete", "services", NS, None, false),
                ("list", "endpointslices", "", None, true),
                ("list", "servicecidrs", "", None, true),
                ("list", "nodes", "", None, true),
                ("patch", "nodes", "", None, false),
                ("create", "events", NS, None, true),
                ("patch", "events", NS, None, true),
                ("create", "leases", NS, None, true),
                ("patch", "leases", NS, None, true),
                ("update", "leases", NS, None, false),
                ("delete", "leases", NS, None, false),
                ("delete", "leases", KVIP_NS, None, true),
                ("get", "secrets", NS, None, false),
                ("list", "pods", "", None, false),
            ],
        )
        .await?;
        check_permissions(
            "kvip-cp",
            &[
                ("create", "leases", KVIP_NS, None, true),
                ("patch", "leases", KVIP_NS, Some("plndr-cp-lock"), true),
                ("watch", "leases", KVIP_NS, Some("plndr-cp-lock"), true),
                ("patch", "leases", KVIP_NS, Some(KCM_LEASE), false),
                ("delete", "leases", KVIP_NS, Some("plndr-cp-lock"), false),
                ("create", "leases", NS, None, false),
                ("list", "leases", "", None, false),
                ("list", "services", "", None, false),
                ("list", "nodes", "", None, false),
                ("create", "events", NS, None, false),
            ],
        )
        .await?;
        check_permissions(
            "kvip",
            &[
                ("patch", "leases", NS, None, true),
                ("patch", "leases", KVIP_NS, Some("plndr-cp-lock"), true),
                ("delete", "leases", KVIP_NS, None, true),
                ("delete", "leases", NS, None, false),
                ("patch", "services", NS, None, true),
                ("update", "services", NS, None, false),
            ],
        )
        .await
    })?
}

/// With the load balancer's own token: another component's Leases cannot
/// be written, though RBAC grants the verbs; Leases named like kvip's, or
/// carrying its label, can.
fn lb_token_cannot_write_other_components_leases() -> Outcome {
    const ACCOUNT: &str = "kvip-lb";
    block_on(async {
        let admin = admin().await?;
        let lb = account_client(ACCOUNT).await?;
        let system: Api<Lease> = Api::namespaced(lb.clone(), KVIP_NS);
        let params = PostParams::default();

        let kcm = kcm_lease(&admin).await?;
        denied_by_policy(
            "update kube-system/kube-controller-manager",
            ACCOUNT,
            take_over(&admin, &lb, KVIP_NS, KCM_LEASE, "worker1").await?,
        )?;
        let mut labelled = kcm.clone();
        labelled.metadata.managed_fields = None;
        labelled
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string());
        denied_by_policy(
            "update kube-system/kube-controller-manager adding kvip's label",
            ACCOUNT,
            system
                .patch(KCM_LEASE, &PatchParams::default(), &Patch::Merge(&labelled))
                .await,
        )?;
        denied_by_policy(
            "delete kube-system/kube-controller-manager",
            ACCOUNT,
            system.delete(KCM_LEASE, &DeleteParams::default()).await,
        )?;
        let after = read_lease(&admin, KVIP_NS, KCM_LEASE)
            .await?
            .ok_or("kube-controller-manager's Lease is gone")?;
        ensure!(
            holder(&after) == holder(&kcm),
            "kube-controller-manager's Lease changed hands: {:?}",
            holder(&after)
        );

        // The API server's own identity Lease, renewed by kube-apiserver.
        let identity = Api::<Lease>::namespaced(admin.clone(), KVIP_NS)
            .list(&ListParams::default().labels("apiserver.kubernetes.io/identity=kube-apiserver"))
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .next()
            .ok_or("no kube-apiserver identity Lease in kube-system")?;
        let identity_name = identity.metadata.name.clone().unwrap_or_default();
        denied_by_policy(
            &format!("update kube-system/{identity_name}"),
            ACCOUNT,
            take_over(&admin, &lb, KVIP_NS, &identity_name, "worker1").await?,
        )?;
        denied_by_policy(
            "create kube-system/kube-scheduler",
            ACCOUNT,
            system
                .create(&params, &lease(KVIP_NS, "kube-scheduler", "worker1", &[]))
                .await,
        )?;

        // Positive controls, with the same token.
        let mine: Api<Lease> = Api::namespaced(lb.clone(), NS);
        let created = allowed(
            "create rbac-e2e/kubevip-x",
            ACCOUNT,
            mine.create(&params, &lease(NS, "kubevip-x", "worker1", &[]))
                .await,
        )?;
        let mut renewed = created.clone();
        if let Some(spec) = renewed.spec.as_mut() {
            spec.holder_identity = Some("worker2".to_string());
        }
        // A merge patch guarded by the version it was created with, as kvip writes.
        allowed(
            "update rbac-e2e/kubevip-x",
            ACCOUNT,
            mine.patch(
                "kubevip-x",
                &PatchParams::default(),
                &Patch::Merge(&renewed),
            )
            .await,
        )?;
        denied_by_policy(
            "create rbac-e2e/team-lease without kvip's label",
            ACCOUNT,
            mine.create(&params, &lease(NS, "team-lease", "worker1", &[]))
                .await,
        )?;
        let created = allowed(
            "create rbac-e2e/team-lease with kvip's label",
            ACCOUNT,
            mine.create(&params, &lease(NS, "team-lease", "worker1", &[MANAGED_BY]))
                .await,
        )?;
        allowed(
            "update rbac-e2e/team-lease, stored with kvip's label",
            ACCOUNT,
            mine.patch(
                "team-lease",
                &PatchParams::default(),
                &Patch::Merge(&created),
            )
            .await,
        )?;
        // Renewals of a labelled Lease skip the policy's expressions (its
        // object selector); every other write is still judged.
        denied_by_policy(
            "create rbac-e2e/other-lease labelled managed-by=KVIP",
            ACCOUNT,
            mine.create(
                &params,
                &lease(NS, "other-lease", "worker1", &[(MANAGED_BY.0, "KVIP")]),
            )
            .await,
        )?;
        allowed(
            "update rbac-e2e/team-lease removing kvip's label (judged by the Lease stored)",
            ACCOUNT,
            mine.patch(
                "team-lease",
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "labels": { MANAGED_BY.0: null } } })),
            )
            .await,
        )?;
        denied_by_policy(
            "update rbac-e2e/team-lease, stored without kvip's label",
            ACCOUNT,
            mine.patch(
                "team-lease",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "holderIdentity": "worker2" } })),
            )
            .await,
        )?;
        denied_by_rbac(
            "delete rbac-e2e/kubevip-x (outside kvip's namespace)",
            ACCOUNT,
            mine.delete("kubevip-x", &DeleteParams::default()).await,
        )?;
        let cleanup: Api<Lease> = Api::namespaced(admin, NS);
        for name in ["kubevip-x", "team-lease"] {
            cleanup
                .delete(name, &DeleteParams::default())
                .await
                .map_err(|e| format!("cleaning up {name}: {e}"))?;
        }
        Ok(())
    })?
}

/// With the load balancer's own token, on another controller's Service:
/// only status, `kube-vip.io/vipHost` and what a pool writes change (the
/// address annotation only where it is absent or a pool gave it).
fn lb_token_changes_only_status_and_viphost() -> Outcome {
    const ACCOUNT: &str = "kvip-lb";
    const POLICY: &str = "kvip-lb-services";
    apply(&format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: {TARGET}
  namespace: {NS}
  labels: {{ team: shop }}
  annotations: {{ owner: shop }}
spec:
  type: LoadBalancer
  loadBalancerClass: example.com/not-kvip
  selector: {{ app: shop }}
  ports: [{{ port: 80, targetPort: 8080 }}]
"#
    ))?;
    apply(&format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: {HAND_SET}
  namespace: {NS}
  annotations: {{ kube-vip.io/loadbalancerIPs: "10.77.0.6" }}
spec:
  type: LoadBalancer
  loadBalancerClass: example.com/not-kvip
  selector: {{ app: shop }}
  ports: [{{ port: 80, targetPort: 8080 }}]
"#
    ))?;
    block_on(async {
        let lb = account_client(ACCOUNT).await?;
        let api: Api<Service> = Api::namespaced(lb, NS);
        let params = PatchParams::default();
        let merge = |value: serde_json::Value| Patch::Merge(value);

        denied_by_policy(
            "patch spec.selector",
            POLICY,
            api.patch(
                TARGET,
                &params,
                &merge(json!({"spec": {"selector": {"app": "evil"}}})),
            )
            .await,
        )?;
        denied_by_policy(
            "patch spec.externalIPs",
            POLICY,
            api.patch(
                TARGET,
                &params,
                &merge(json!({"spec": {"externalIPs": ["10.77.0.5"]}})),
            )
            .await,
        )?;
        denied_by_policy(
            "patch a label",
            POLICY,
            api.patch(
                TARGET,
                &params,
                &merge(json!({"metadata": {"labels": {"team": "evil"}}})),
            )
            .await,
        )?;
        denied_by_policy(
            "add a label",
            POLICY,
            api.patch(
                TARGET,
                &params,
                &merge(json!({"metadata": {"labels": {"x": "y"}}})),
            )
            .await,
        )?;
        denied_by_policy(
            "patch another annotation",
            POLICY,
            api.patch(
                TARGET,
                &params,
                &merge(json!({"metadata": {"annotations": {"owner": "evil"}}})),
            )
            .await,
        )?;
        denied_by_policy(
            "change kube-vip.io/loadbalancerIPs its author set",
            POLICY,
            api.patch(
                HAND_SET,
                &params,
                &merge(json!({"metadata": {"annotations": {"kube-vip.io/loadbalancerIPs": "10.77.0.5"}}})),
            )
            .await,
        )?;
        denied_by_policy(
            "remove kube-vip.io/loadbalancerIPs its author set",
            POLICY,
            api.patch(
                HAND_SET,
                &params,
                &merge(json!({"metadata": {"annotations": {"kube-vip.io/loadbalancerIPs": null}}})),
            )
            .await,
        )?;
        denied_by_policy(
            "add a finalizer",
            POLICY,
            api.patch(
                TARGET,
                &params,
                &merge(json!({"metadata": {"finalizers": ["example.com/hold"]}})),
            )
            .await,
        )?;
        denied_by_policy(
            "change a label through the status subresource",
            POLICY,
            api.patch_status(
                TARGET,
                &params,
                &merge(json!({"metadata": {"labels": {"team": "evil"}}})),
            )
            .await,
        )?;

        // Positive controls, with the same token. The host named is no
        // node, so no kvip instance takes it for its own and clears it.
        let host = "rbac-e2e-host";
        let written = allowed(
            "patch kube-vip.io/vipHost",
            ACCOUNT,
            api.patch(
                TARGET,
                &params,
                &merge(json!({"metadata": {"annotations": {"kube-vip.io/vipHost": host}}})),
            )
            .await,
        )?;
        let annotations = written.metadata.annotations.unwrap_or_default();
        ensure!(
            annotations.get("kube-vip.io/vipHost").map(String::as_str) == Some(host),
            "vipHost not stored: {annotations:?}"
        );
        ensure!(
            annotations.get("owner").map(String::as_str) == Some("shop"),
            "other annotations changed: {annotations:?}"
        );
        let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.77.0.121", "ipMode": "VIP"}]}}});
        let written = allowed(
            "patch status.loadBalancer",
            ACCOUNT,
            api.patch_status(TARGET, &params, &merge(status)).await,
        )?;
        let ingress = written
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .unwrap_or_default();
        ensure!(
            ingress.first().and_then(|i| i.ip.as_deref()) == Some("10.77.0.121"),
            "ingress not stored: {ingress:?}"
        );
        allowed(
            "remove kube-vip.io/vipHost",
            ACCOUNT,
            api.patch(
                TARGET,
                &params,
                &merge(json!({"metadata": {"annotations": {"kube-vip.io/vipHost": null}}})),
            )
            .await,
        )?;
        // What a pool writes: the address of a Service that has none, with
        // the label; and then, as the label says a pool gave it, another.
        let pool_write = |address: Option<&str>| {
            merge(json!({"metadata": {
                "labels": {"implementation": address.map(|_| "kube-vip")},
                "annotations": {"kube-vip.io/loadbalancerIPs": address},
            }}))
        };
        for (what, address) in [
            (
                "give kube-vip.io/loadbalancerIPs and the label to a Service without an address",
                Some("10.77.0.7"),
            ),
            (
                "change kube-vip.io/loadbalancerIPs a pool gave",
                Some("10.77.0.8"),
            ),
            (
                "remove kube-vip.io/loadbalancerIPs a pool gave, and the label",
                None,
            ),
        ] {
            allowed(
                what,
                ACCOUNT,
                api.patch(TARGET, &params, &pool_write(address)).await,
            )?;
        }
        let selector = Api::<Service>::namespaced(admin().await?, NS)
            .get(TARGET)
            .await
            .map_err(|e| e.to_string())?
            .spec
            .and_then(|s| s.selector)
            .unwrap_or_default();
        ensure!(
            selector.get("app").map(String::as_str) == Some("shop"),
            "selector changed: {selector:?}"
        );
        Ok(())
    })?
}

/// With the control plane's own token: no Lease outside `cp_namespace`, no
/// Lease but its own to update, no create of another name there.
fn cp_token_writes_only_its_lease() -> Outcome {
    const ACCOUNT: &str = "kvip-cp";
    block_on(async {
        let admin = admin().await?;
        let cp = account_client(ACCOUNT).await?;
        let params = PostParams::default();
        let system: Api<Lease> = Api::namespaced(cp.clone(), KVIP_NS);
        denied_by_rbac(
            "create rbac-e2e/kvip-x (outside cp_namespace)",
            ACCOUNT,
            Api::<Lease>::namespaced(cp.clone(), NS)
                .create(&params, &lease(NS, "kvip-x", "cp1", &[]))
                .await,
        )?;
        kcm_lease(&admin).await?;
        denied_by_rbac(
            "update kube-system/kube-controller-manager",
            ACCOUNT,
            take_over(&admin, &cp, KVIP_NS, KCM_LEASE, "cp1").await?,
        )?;
        denied_by_policy(
            "create kube-system/kube-scheduler",
            ACCOUNT,
            system
                .create(&params, &lease(KVIP_NS, "kube-scheduler", "cp1", &[]))
                .await,
        )?;
        denied_by_rbac(
            "patch a Service",
            ACCOUNT,
            Api::<Service>::namespaced(cp.clone(), NS)
                .patch(
                    TARGET,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {"kube-vip.io/vipHost": "cp1"}}}),
                    ),
                )
                .await,
        )?;
        // Positive control: a Lease named like kvip's in cp_namespace.
        allowed(
            "create kube-system/kvip-rbac-e2e",
            ACCOUNT,
            system
                .create(&params, &lease(KVIP_NS, "kvip-rbac-e2e", "cp1", &[]))
                .await,
        )?;
        Api::<Lease>::namespaced(admin, KVIP_NS)
            .delete("kvip-rbac-e2e", &DeleteParams::default())
            .await
            .map_err(|e| format!("cleaning up kvip-rbac-e2e: {e}"))?;
        Ok(())
    })?
}

/// Stopping kvip withdraws, releases its Leases (update) and deletes its
/// instance Leases (delete), all under the new RBAC and policy.
fn stopping_releases_and_deletes_under_the_policy() -> Outcome {
    let lb = temp_file("lb-stop.yaml", &{
        let mut args = vec!["manifest", "all", "--role", "lb"];
        args.extend_from_slice(&TIMINGS);
        kvip(&args)?
    })?;
    let cp = temp_file("cp-stop.yaml", &cp_manifest()?)?;
    lab_ok(&["undeploy", &lb.display().to_string()])?;
    lab_ok(&["undeploy", &cp.display().to_string()])?;
    block_on(async {
        let admin = admin().await?;
        for node in ["cp1", "worker1", "worker2"] {
            let name = format!("kvip-lb-{node}");
            ensure!(
                read_lease(&admin, KVIP_NS, &name).await?.is_none(),
                "instance Lease {name} still there after shutdown"
            );
        }
        for (namespace, name) in [(NS, "kubevip-web"), (KVIP_NS, "plndr-cp-lock")] {
            let lease = read_lease(&admin, namespace, name)
                .await?
                .ok_or(format!("no Lease {namespace}/{name}"))?;
            ensure!(
                holder(&lease).unwrap_or_default().is_empty(),
                "{namespace}/{name} not released: held by {:?}",
                holder(&lease)
            );
        }
        Ok(())
    })??;
    ensure!(
        nodes_with_address(VIP).is_empty() && nodes_with_address(CP_VIP).is_empty(),
        "VIPs left on {:?} {:?}",
        nodes_with_address(VIP),
        nodes_with_address(CP_VIP)
    );
    Ok(())
}

/// kube-vip's published ClusterRole, as `kube-vip manifest rbac` prints it
/// (`update` on Leases and Services, never `patch` on either, no `delete` on
/// Leases, no Events, no ServiceCIDRs), bound to kvip's load-balancer account.
const KUBE_VIP_ROLE: &str = "kvip-e2e-kube-vip-role";

/// The Helm chart's objects, rendered by helm (built from its Go module by
/// scripts/helm.sh) for the two-instance layout and for one DaemonSet with a
/// Lease name of its own, are all accepted by the API server in a
/// server-side dry run: schema, defaulting and the admission policies' CEL
/// compiled by the server itself. The same render with one expression
/// broken must be refused, so a dry run that judges nothing cannot pass.
fn chart_passes_a_server_side_dry_run() -> Outcome {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("the lab crate lives in the workspace")?
        .to_path_buf();
    let chart = root.join("deploy/helm/kvip");
    let value_sets = [
        ("two-instance", format!("address: {CP_VIP}\n")),
        (
            "one-daemonset",
            format!(
                "roles: [all]\naddress: {CP_VIP}\nenv:\n  - name: vip_leasename\n    value: cluster-vip\n"
            ),
        ),
    ];
    for (name, values) in value_sets {
        let file = temp_file(&format!("chart-{name}.yaml"), &values)?;
        let out = std::process::Command::new("bash")
            .arg(root.join("scripts/helm.sh"))
            .args(["template", "kvip"])
            .arg(&chart)
            .args(["--namespace", KVIP_NS, "-f"])
            .arg(&file)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("scripts/helm.sh: {e}"))?;
        ensure!(
            out.status.success(),
            "{name}: helm template failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let rendered = String::from_utf8_lossy(&out.stdout).into_owned();
        let objects = rendered.lines().filter(|l| l.starts_with("kind: ")).count();
        ensure!(
            objects >= 10,
            "{name}: the chart rendered only {objects} objects"
        );
        let result = kubectl_input(&["apply", "--dry-run=server", "-f", "-"], Some(&rendered))
            .map_err(|e| format!("{name}: the API server refused the chart: {e}"))?;
        let accepted = result
            .lines()
            .filter(|l| l.contains("(server dry run)"))
            .count();
        ensure!(
            accepted == objects,
            "{name}: {accepted} of {objects} objects accepted in the dry run:\n{result}"
        );
        println!("    {name}: {objects} objects accepted by a server-side dry run");

        let broken = rendered.replacen(
            "variables.leaseNamedForKvip || variables.leaseLabelledKvip",
            "variables.leaseNamedForKvip ||",
            1,
        );
        ensure!(
            broken != rendered,
            "{name}: the Lease policy's check is not in the chart"
        );
        let refused = kubectl_input(&["apply", "--dry-run=server", "-f", "-"], Some(&broken));
        ensure!(
            refused.is_err(),
            "{name}: a policy whose CEL does not compile passed the dry run: {refused:?}"
        );
    }
    Ok(())
}

fn kube_vip_rbac() -> Result<String, String> {
    let rbac = kvip_lab::kube_vip::rbac().map_err(|e| format!("{e:#}"))?;
    kvip_lab::kube_vip::rules_bound_to(&rbac, KUBE_VIP_ROLE, "kvip-lb", KVIP_NS)
        .map_err(|e| format!("{e:#}"))
}

/// `spec.renewTime` of Lease `namespace/name` (a MicroTime: fixed width,
/// so later is greater) with its holder.
fn renewal(namespace: &str, name: &str) -> Option<(String, String)> {
    let lease = get_json(&["lease", name, "-n", namespace]).ok()?;
    Some((
        lease["spec"]["holderIdentity"].as_str()?.to_string(),
        lease["spec"]["renewTime"].as_str()?.to_string(),
    ))
}

/// The load balancer under kube-vip's published RBAC in place of kvip's
/// own (and without kvip's admission policy), as a drop-in replacement
/// runs: Leases may be updated but not patched, so kvip's first Lease patch
/// is refused and it replaces Leases whole from then on. For 30 s the
/// Service keeps answering and its Lease and the instance Lease are renewed.
/// Runs after kvip is stopped; leaves the load balancer running (teardown
/// follows).
fn kvip_works_under_kube_vips_rbac() -> Outcome {
    const ACCOUNT: &str = "kvip-lb";
    // kvip's own grants and policy for the account go; kube-vip's come.
    kubectl(&[
        "delete",
        "--ignore-not-found",
        "clusterrolebinding/kvip-lb",
        "clusterrole/kvip-lb",
        "validatingadmissionpolicybinding/kvip-lb",
        "validatingadmissionpolicy/kvip-lb",
        "validatingadmissionpolicybinding/kvip-lb-services",
        "validatingadmissionpolicy/kvip-lb-services",
    ])?;
    kubectl(&[
        "-n",
        KVIP_NS,
        "delete",
        "--ignore-not-found",
        "rolebinding/kvip-lb",
        "role/kvip-lb",
    ])?;
    apply(&kube_vip_rbac()?)?;
    // The authorizer follows RBAC objects through an informer: wait until it
    // answers as kube-vip's role says, which also checks that role.
    let expected: [Expectation<'_>; 11] = [
        ("update", "services", NS, None, true),
        ("patch", "services", NS, None, false),
        ("create", "events", NS, None, false),
        ("update", "leases", NS, None, true),
        ("create", "leases", NS, None, true),
        ("patch", "leases", NS, None, false),
        ("patch", "leases", KVIP_NS, None, false),
        ("delete", "leases", KVIP_NS, None, false),
        ("update", "services/status", NS, None, true),
        ("patch", "services/status", NS, None, false),
        ("list", "servicecidrs", "", None, false),
    ];
    let mut last = String::new();
    wait_for(
        "kvip-lb to hold exactly kube-vip's role",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || match block_on(check_permissions(ACCOUNT, &expected)) {
            Ok(Ok(())) => Some(()),
            Ok(Err(e)) | Err(e) => {
                last = e;
                None
            }
        },
    )
    .map_err(|e| format!("{e}: {last}"))?;

    let mut args = vec!["manifest", "daemonset", "--role", "lb"];
    args.extend_from_slice(&TIMINGS);
    let daemonset = kvip(&args)?;
    let file = temp_file(
        "lb-kube-vip-rbac.yaml",
        &format!("{}---\n{daemonset}", kube_vip_rbac()?),
    )?;
    // Whatever an earlier kvip left on the Service goes, so kvip must write
    // the status and vipHost again, under kube-vip's RBAC.
    kubectl(&[
        "-n",
        NS,
        "patch",
        "service",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"loadBalancer":{"ingress":null}}}"#,
    ])?;
    kubectl(&[
        "-n",
        NS,
        "annotate",
        "service",
        "web",
        "kube-vip.io/vipHost-",
    ])?;
    lab_ok(&["deploy", &file.display().to_string()])?;

    // The Service of the first scenario, its Lease released at the stop:
    // taking it is a replace of a Lease that exists.
    let target = format!("{VIP}:80");
    probe_until(
        &target,
        Duration::from_secs(15),
        Duration::from_millis(50),
        |a| a == "worker1/web-1",
    )?;
    let leases = [
        (NS.to_string(), "kubevip-web".to_string()),
        (KVIP_NS.to_string(), "kvip-lb-worker1".to_string()),
    ];
    let mut seen: Vec<String> = Vec::new();
    for (namespace, name) in &leases {
        let (holder, renewed) = wait_for(
            &format!("{namespace}/{name} held by worker1"),
            Duration::from_secs(10),
            Duration::from_millis(200),
            || renewal(namespace, name).filter(|(h, _)| h == "worker1"),
        )?;
        println!("    {namespace}/{name}: held by {holder}, renewed {renewed}");
        seen.push(renewed);
    }

    // Sampled every second for 30 s: the Service's Lease is renewed every
    // retry period (1 s), the instance Lease every 5 s (it runs 15 s).
    struct Renewals {
        last: String,
        at: std::time::Instant,
        count: usize,
        longest_gap: Duration,
    }
    let started = std::time::Instant::now();
    let mut renewals: Vec<Renewals> = seen
        .into_iter()
        .map(|last| Renewals {
            last,
            at: started,
            count: 0,
            longest_gap: Duration::ZERO,
        })
        .collect();
    let prober = Prober::start(&[target.as_str()], Duration::from_secs(1));
    while started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_secs(1));
        for ((namespace, name), r) in leases.iter().zip(renewals.iter_mut()) {
            let Some((holder, renewed)) = renewal(namespace, name) else {
                continue;
            };
            if holder == "worker1" && renewed > r.last {
                r.longest_gap = r.longest_gap.max(r.at.elapsed());
                r.at = std::time::Instant::now();
                r.count += 1;
                r.last = renewed;
            }
        }
    }
    let (sent, failed) = prober.finish();
    println!("    30 s: {sent} probes, {} failed", failed.len());
    ensure!(sent > 0, "no probe was sent");
    ensure!(
        failed.is_empty(),
        "{VIP} stopped answering under kube-vip's RBAC: {failed:?}"
    );
    for ((namespace, name), r) in leases.iter().zip(&mut renewals) {
        r.longest_gap = r.longest_gap.max(r.at.elapsed());
        println!(
            "    {namespace}/{name}: renewed {} times by worker1, longest gap {:.1} s",
            r.count,
            r.longest_gap.as_secs_f64()
        );
        ensure!(
            r.count >= 4 && r.longest_gap <= Duration::from_secs(8),
            "{namespace}/{name} not kept renewed: {} renewals by worker1 in 30 s, longest gap {:.1} s",
            r.count,
            r.longest_gap.as_secs_f64()
        );
    }

    // The Service's status and vipHost are written by update, as kube-vip
    // writes them, so kube-proxy has its rule for the VIP.
    expect_status(NS, "web", VIP, "worker1")?;
    // Each fallback was taken, and said so once; each missing permission
    // kvip does without was said once, never per Service or per retry.
    let log = lab_ok(&["logs", "worker1"])?;
    for (line, want) in [
        (LEASE_PATCH, 1),
        (STATUS_PATCH, 1),
        (SERVICE_PATCH, 1),
        (EVENTS, 1),
    ] {
        let seen = log.matches(line).count();
        ensure!(
            seen == want,
            "worker1 logged {line:?} {seen} times, not {want}"
        );
    }
    Ok(())
}

fn main() {
    run_all(
        "rbac",
        &[
            Scenario {
                name: "setup",
                run: setup,
            },
            Scenario {
                name: "kvip_works_under_its_own_policy",
                run: kvip_works_under_its_own_policy,
            },
            Scenario {
                name: "each_account_holds_only_its_role",
                run: each_account_holds_only_its_role,
            },
            Scenario {
                name: "lb_token_cannot_write_other_components_leases",
                run: lb_token_cannot_write_other_components_leases,
            },
            Scenario {
                name: "lb_token_changes_only_status_and_viphost",
                run: lb_token_changes_only_status_and_viphost,
            },
            Scenario {
                name: "cp_token_writes_only_its_lease",
                run: cp_token_writes_only_its_lease,
            },
            Scenario {
                name: "stopping_releases_and_deletes_under_the_policy",
                run: stopping_releases_and_deletes_under_the_policy,
            },
            Scenario {
                name: "chart_passes_a_server_side_dry_run",
                run: chart_passes_a_server_side_dry_run,
            },
            Scenario {
                name: "kvip_works_under_kube_vips_rbac",
                run: kvip_works_under_kube_vips_rbac,
            },
            Scenario {
                name: "teardown",
                run: lab_down,
            },
        ],
    );
}
