//! Addresses from pools: kube-vip-cloud-provider v0.0.12's `kubevip`
//! ConfigMap read into a [`PoolConfig`], and a Service's addresses chosen
//! from it the way the cloud provider chooses them, so either may allocate
//! during a migration and a user sees the same addresses.
//!
//! The rule, as the cloud provider applies it:
//!
//! 1. **Which pool.** A namespace takes the first *present* key of
//!    `cidr-<ns>`, `cidr-global`, `range-<ns>`, `range-global`
//!    ([`pool_keys`]). Presence decides, not validity: an empty or bad value
//!    leaves the namespace without addresses rather than falling through
//!    to the next key. Whether a value holds CIDRs or ranges is read from
//!    the value (a `/` anywhere means CIDRs), not from the key.
//! 2. **Which addresses.** A value is a comma list without white space;
//!    its items are merged into one sorted set per family, whatever their
//!    order or overlap. `skip-end-ips-in-cidr: true` drops the first and
//!    last address of each block of the merged IPv4 set of a CIDR pool
//!    (blocks of two or one address are kept). At allocation every IPv4
//!    address ending in `.0` or `.255` is skipped, in every pool; IPv6
//!    addresses are never skipped.
//! 3. **Which address.** The first address of the set that no Service uses,
//!    from the lowest up, or from the highest down with `search-order: desc`.
//!    With `allow-share-<ns>` (else `allow-share-global`) true, an IPv4
//!    address already used is taken first when none of its Services' port
//!    numbers is among the new Service's (protocols are not compared).
//! 4. **Which families.** `SingleStack` (or no policy): the first of
//!    `spec.ipFamilies`, or IPv4 when the pool has IPv4 and the list is
//!    empty. `PreferDualStack`: every family the pool has, the Service's
//!    first family first. `RequireDualStack`: both, or nothing.
//! 5. `interface-<ns>` (else `interface-global`) becomes the Service's
//!    `kube-vip.io/serviceInterface`; `search-order` and
//!    `skip-end-ips-in-cidr` are global settings with no namespace form.
//!
//! Where kvip does something else on purpose — it counts every namespace's
//! addresses as used, shares only inside a namespace and only pool
//! addresses, refuses the DHCP marker `0.0.0.0/32`, and never hands out a
//! family the Service does not list — and every other oddity of the cloud
//! provider, is written down in `docs/ipam-differences.md`.
//!
//! Nothing here enumerates a pool: sets are ranges of numbers, counts are
//! arithmetic, and the search for a free address steps only over used or
//! skipped addresses, so an IPv6 /64 costs what a /29 costs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::candidacy::PendingReason;
use crate::config::parse_go_bool;
use crate::service::{LbClassRule, ServiceInput, ServiceKey, ServiceView, interface_name_rule};

/// The cloud provider's ConfigMap name (its `KUBEVIP_CONFIG_MAP` default).
pub const CONFIG_MAP_NAME: &str = "kubevip";
/// The cloud provider's ConfigMap namespace (its `KUBEVIP_NAMESPACE` default).
pub const CONFIG_MAP_NAMESPACE: &str = "kube-system";
/// The label the cloud provider puts on every Service it gave an address,
/// with [`IMPLEMENTATION_LABEL_VALUE`]; it lists Services by it.
pub const IMPLEMENTATION_LABEL: &str = "implementation";
/// The value of [`IMPLEMENTATION_LABEL`].
pub const IMPLEMENTATION_LABEL_VALUE: &str = "kube-vip";
/// A pool of exactly this text is kube-vip's request for DHCP, which kvip refuses.
pub const DHCP_MARKER: &str = "0.0.0.0/32";
/// The scope of the keys every namespace falls back to.
pub const GLOBAL: &str = "global";
/// `search-order: desc` hands out the highest free address first.
pub const SEARCH_ORDER_KEY: &str = "search-order";
/// `skip-end-ips-in-cidr: true` keeps the ends of each IPv4 CIDR block out.
pub const SKIP_END_IPS_KEY: &str = "skip-end-ips-in-cidr";

const CIDR_PREFIX: &str = "cidr-";
const RANGE_PREFIX: &str = "range-";
const ALLOW_SHARE_PREFIX: &str = "allow-share-";
const INTERFACE_PREFIX: &str = "interface-";

/// An IP address family, named as `spec.ipFamilies` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Family {
    /// `IPv4`.
    #[serde(rename = "IPv4")]
    V4,
    /// `IPv6`.
    #[serde(rename = "IPv6")]
    V6,
}

impl Family {
    /// The family of `address`.
    pub fn of(address: &IpAddr) -> Family {
        match address {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Reads a `spec.ipFamilies` item; `None` for anything but `IPv4` and `IPv6`.
    pub fn from_kubernetes(name: &str) -> Option<Family> {
        match name {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        }
    }

    /// `IPv4` or `IPv6`.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    fn other(self) -> Family {
        match self {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        }
    }

    fn to_addr(self, n: u128) -> IpAddr {
        match self {
            // A V4 number never exceeds u32::MAX: it only ever comes from an Ipv4Addr.
            Family::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An address as its family and its number.
fn number(address: &IpAddr) -> (Family, u128) {
    match address {
        IpAddr::V4(v4) => (Family::V4, u128::from(u32::from(*v4))),
        IpAddr::V6(v6) => (Family::V6, u128::from(*v6)),
    }
}

/// IPv4 addresses ending in .0 or .255 are never handed out, whatever the
/// prefix length: the cloud provider takes them for network and broadcast.
fn is_skipped(family: Family, n: u128) -> bool {
    family == Family::V4 && matches!(n & 0xff, 0 | 0xff)
}

/// How many IPv4 numbers in `0..=n` end in .0 or .255.
fn skipped_up_to(n: u128) -> u128 {
    2 * (n >> 8) + 1 + u128::from(n & 0xff == 0xff)
}

/// `spec.ipFamilyPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FamilyPolicy {
    /// One address, of the Service's first family.
    SingleStack,
    /// One address of each family the pool can give, at least one.
    PreferDualStack,
    /// One address of each family, or none at all.
    RequireDualStack,
}

impl FamilyPolicy {
    /// Reads `spec.ipFamilyPolicy`; `None` for anything else.
    pub fn from_kubernetes(name: &str) -> Option<FamilyPolicy> {
        match name {
            "SingleStack" => Some(FamilyPolicy::SingleStack),
            "PreferDualStack" => Some(FamilyPolicy::PreferDualStack),
            "RequireDualStack" => Some(FamilyPolicy::RequireDualStack),
            _ => None,
        }
    }
}

/// The order free addresses are looked for in (`search-order`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum SearchOrder {
    /// From the lowest address up (the default).
    #[default]
    Ascending,
    /// From the highest address down (`search-order: desc`).
    Descending,
}

/// How a pool's value is read. The cloud provider decides by the text of
/// the value (a `/` anywhere means CIDRs), not by the key: `range-x:
/// 10.0.0.0/24` is a CIDR pool and `cidr-x: 10.0.0.1-10.0.0.9` a range pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PoolKind {
    /// A list of CIDRs; `skip-end-ips-in-cidr` applies.
    Cidr,
    /// A list of `first-last` ranges.
    Range,
}

impl PoolKind {
    fn name(self) -> &'static str {
        match self {
            PoolKind::Cidr => "CIDRs",
            PoolKind::Range => "ranges",
        }
    }
}

/// Inclusive address ranges of one family as numbers: sorted, disjoint and
/// never adjacent, so two sets with the same addresses are equal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RangeSet(Vec<(u128, u128)>);

impl RangeSet {
    fn new(mut ranges: Vec<(u128, u128)>) -> RangeSet {
        ranges.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (first, last) in ranges {
            match merged.last_mut() {
                Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
                _ => merged.push((first, last)),
            }
        }
        RangeSet(merged)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn contains(&self, n: u128) -> bool {
        let i = self.0.partition_point(|&(_, last)| last < n);
        self.0.get(i).is_some_and(|&(first, _)| first <= n)
    }

    /// Whether `n` is in the set and may be handed out.
    fn hands_out(&self, family: Family, n: u128) -> bool {
        self.contains(n) && !is_skipped(family, n)
    }

    /// How many addresses may be handed out, saturating at `u128::MAX` (`::/0`).
    fn size(&self, family: Family) -> u128 {
        self.0.iter().fold(0u128, |total, &(first, last)| {
            let mut count = (last - first).saturating_add(1);
            if family == Family::V4 {
                let below = if first == 0 {
                    0
                } else {
                    skipped_up_to(first - 1)
                };
                count -= skipped_up_to(last) - below;
            }
            total.saturating_add(count)
        })
    }

    /// The first address in `order` that is neither used nor skipped. Each
    /// step passes a used or skipped address, so the work grows with the
    /// addresses in use, never with the size of the set.
    fn first_free(
        &self,
        family: Family,
        order: SearchOrder,
        used: &BTreeSet<u128>,
    ) -> Option<u128> {
        let free = |n: u128| !is_skipped(family, n) && !used.contains(&n);
        match order {
            SearchOrder::Ascending => self.0.iter().find_map(|&(first, last)| {
                let mut n = first;
                loop {
                    if free(n) {
                        return Some(n);
                    }
                    if n == last {
                        return None;
                    }
                    n += 1;
                }
            }),
            SearchOrder::Descending => self.0.iter().rev().find_map(|&(first, last)| {
                let mut n = last;
                loop {
                    if free(n) {
                        return Some(n);
                    }
                    if n == first {
                        return None;
                    }
                    n -= 1;
                }
            }),
        }
    }

    /// The IPv4 set as the minimal CIDR blocks of each of its ranges, as
    /// (first, last, prefix length).
    fn ipv4_blocks(&self) -> Vec<(u128, u128, u32)> {
        let mut blocks = Vec::new();
        for &(first, last) in &self.0 {
            let mut n = first;
            loop {
                let align = if n == 0 {
                    32
                } else {
                    n.trailing_zeros().min(32)
                };
                // floor(log2(last - n + 1)); the span is at most 2^32.
                let fits = 127 - (last - n + 1).leading_zeros();
                let k = align.min(fits);
                let end = n + (1u128 << k) - 1;
                blocks.push((n, end, 32 - k));
                if end >= last {
                    break;
                }
                n = end + 1;
            }
        }
        blocks
    }

    fn ranges(&self, family: Family) -> Vec<AddressRange> {
        self.0
            .iter()
            .map(|&(first, last)| AddressRange {
                first: family.to_addr(first),
                last: family.to_addr(last),
            })
            .collect()
    }
}

/// Inclusive addresses from `first` to `last`, of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AddressRange {
    /// The lowest address.
    pub first: IpAddr,
    /// The highest address.
    pub last: IpAddr,
}

/// One address family of a pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FamilyPool {
    /// Every address the value names, for the fence.
    written: RangeSet,
    /// What may be handed out: `written` less the ends `skip-end-ips-in-cidr`
    /// drops (addresses ending in .0 and .255 are skipped at allocation).
    offered: RangeSet,
}

/// One address pool: the value of a `cidr-*` or `range-*` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// The ConfigMap key, such as `cidr-global` or `range-team-a`.
    pub key: String,
    /// How the value was read.
    pub kind: PoolKind,
    /// The value is exactly [`DHCP_MARKER`]: every Service it serves would
    /// get `0.0.0.0`, whatever its family.
    pub dhcp: bool,
    /// The IPv4 part of a CIDR pool is exactly `0.0.0.0/32` (such as
    /// `0.0.0.0/32,fd00::/64`): its IPv4 address would be `0.0.0.0`.
    pub ipv4_dhcp: bool,
    v4: FamilyPool,
    v6: FamilyPool,
}

impl Pool {
    fn family(&self, family: Family) -> &FamilyPool {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// Whether the value names any address of `family`.
    pub fn has(&self, family: Family) -> bool {
        !self.family(family).written.is_empty()
    }

    /// The addresses of `family` the value names, merged and sorted.
    pub fn written(&self, family: Family) -> Vec<AddressRange> {
        self.family(family).written.ranges(family)
    }

    /// The addresses of `family` that may be handed out: [`Pool::written`]
    /// less the ends `skip-end-ips-in-cidr` drops. IPv4 addresses ending in
    /// .0 or .255 are still inside; allocation skips them.
    pub fn offered(&self, family: Family) -> Vec<AddressRange> {
        self.family(family).offered.ranges(family)
    }

    /// Whether the value names `address`; a DHCP marker names none.
    pub fn contains(&self, address: &IpAddr) -> bool {
        let (family, n) = number(address);
        if self.dhcp || (family == Family::V4 && self.ipv4_dhcp) {
            return false;
        }
        self.family(family).written.contains(n)
    }
}

/// Why a ConfigMap value cannot be used as written. The text follows the
/// quoted value in [`Problem`]'s message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum ProblemKind {
    /// A pool key with nothing in it.
    #[error(
        "is empty: the namespaces that find this key first get no address (the next key is not tried); give it addresses or remove it"
    )]
    EmptyPool,
    /// An item of a pool's list that does not parse.
    #[error(
        "has a bad item {item:?}: {reason}; the namespaces that find this key first get no address until it is fixed"
    )]
    BadItem {
        /// The item as written.
        item: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An item with addresses kvip refuses as VIPs; the pool still works.
    #[error(
        "has {what} in {item:?}: they are handed out as kube-vip-cloud-provider does, and kvip then refuses them on the Service; take them out of the pool"
    )]
    Unusable {
        /// The item as written.
        item: String,
        /// What they are.
        what: &'static str,
    },
    /// A value read the other way than its key says (a `/` decides).
    #[error(
        "is read as {}, since kube-vip-cloud-provider decides by a / in the value, not by the key",
        .kind.name()
    )]
    ReadAs {
        /// How it is read.
        kind: PoolKind,
    },
    /// `allow-share-*` that Go's ParseBool refuses.
    #[error(
        "is not a boolean (true or false, Go ParseBool spellings): sharing is off for the namespaces that find this key first, as in kube-vip-cloud-provider"
    )]
    NotABoolean,
    /// `skip-end-ips-in-cidr` other than `true` or `false`.
    #[error(
        "leaves it off: only the exact text true turns it on (kube-vip-cloud-provider compares the text)"
    )]
    NotExactlyTrue,
    /// `search-order` other than `desc` or `asc`.
    #[error(
        "is not desc: addresses are searched from the lowest up (only the exact text desc reverses it)"
    )]
    UnknownSearchOrder,
    /// `interface-*` that is no interface name.
    #[error(
        "is not an interface name: {reason}; Services of the namespaces that find this key first get no address until it is fixed"
    )]
    BadInterface {
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A key the cloud provider does not read.
    #[error(
        "is ignored: the key is none of cidr-<namespace>, range-<namespace>, allow-share-<namespace>, interface-<namespace> (each also with -global), search-order, skip-end-ips-in-cidr"
    )]
    UnknownKey,
    /// A per-namespace key whose suffix no namespace can have.
    #[error(
        "is ignored: no namespace is named like the end of this key (namespaces are lowercase letters, digits and -, at most 63)"
    )]
    NoSuchNamespace,
}

/// A ConfigMap value kvip reports, naming the key and the text; the other
/// keys keep working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{CONFIG_MAP_NAME} ConfigMap key {key}: {value:?} {kind}")]
pub struct Problem {
    /// The key.
    pub key: String,
    /// Its value as written.
    pub value: String,
    /// What is wrong.
    pub kind: ProblemKind,
}

/// Why a Service gets no address from the pools. [`IpamError::reason`] is
/// the short name for Events, metrics and `kvip status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum IpamError {
    /// No key of the lookup order is present.
    #[error(
        "no address pool for namespace {namespace}: set cidr-{namespace}, cidr-global, range-{namespace} or range-global in the {CONFIG_MAP_NAME} ConfigMap"
    )]
    NoPool {
        /// The Service's namespace.
        namespace: String,
    },
    /// The key the namespace finds first holds a bad value.
    #[error("{0}")]
    BadValue(Problem),
    /// The pool has no address of a family the Service needs.
    #[error("pool {key} has no {family} addresses, which the Service's IP families require")]
    NoPoolForFamily {
        /// The pool's key.
        key: String,
        /// The family it lacks.
        family: Family,
    },
    /// Every address of the pool in these families is in use.
    #[error(
        "pool {key} has no free {} address: every one is in use",
        .families.iter().map(|f| f.name()).collect::<Vec<_>>().join(" or ")
    )]
    PoolExhausted {
        /// The pool's key.
        key: String,
        /// The families with no free address.
        families: Vec<Family>,
    },
    /// The pool is kube-vip's DHCP marker.
    #[error(
        "pool {key} is {DHCP_MARKER}, kube-vip's request for an address by DHCP, which kvip does not implement; give the pool addresses"
    )]
    Dhcp {
        /// The pool's key.
        key: String,
    },
}

/// Why the pools gave a Service no address, as a stable code (the
/// pending reason `kvip status`, Events and metrics show).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
pub enum PoolCode {
    /// [`IpamError::NoPool`].
    NoPool,
    /// [`IpamError::BadValue`].
    BadPoolConfig,
    /// [`IpamError::NoPoolForFamily`].
    NoPoolForFamily,
    /// [`IpamError::PoolExhausted`].
    PoolExhausted,
    /// [`IpamError::Dhcp`].
    DhcpNotSupported,
}

impl PoolCode {
    /// The code as text.
    pub fn name(self) -> &'static str {
        match self {
            PoolCode::NoPool => "NoPool",
            PoolCode::BadPoolConfig => "BadPoolConfig",
            PoolCode::NoPoolForFamily => "NoPoolForFamily",
            PoolCode::PoolExhausted => "PoolExhausted",
            PoolCode::DhcpNotSupported => "DhcpNotSupported",
        }
    }
}

impl IpamError {
    /// The stable code of the reason.
    pub fn code(&self) -> PoolCode {
        match self {
            IpamError::NoPool { .. } => PoolCode::NoPool,
            IpamError::BadValue(_) => PoolCode::BadPoolConfig,
            IpamError::NoPoolForFamily { .. } => PoolCode::NoPoolForFamily,
            IpamError::PoolExhausted { .. } => PoolCode::PoolExhausted,
            IpamError::Dhcp { .. } => PoolCode::DhcpNotSupported,
        }
    }

    /// A short CamelCase name for the reason.
    pub fn reason(&self) -> &'static str {
        self.code().name()
    }

    /// The key of the pool the Service's namespace takes from, when it has one.
    pub fn pool(&self) -> Option<&str> {
        match self {
            IpamError::NoPool { .. } => None,
            IpamError::BadValue(problem) => Some(&problem.key),
            IpamError::NoPoolForFamily { key, .. }
            | IpamError::PoolExhausted { key, .. }
            | IpamError::Dhcp { key } => Some(key),
        }
    }
}

/// The `kubevip` ConfigMap's `data`, read. Bad values are kept as
/// [`Problem`]s: the namespaces that reach them get the problem as their
/// error, everyone else is unaffected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolConfig {
    /// `search-order` (global only; there is no namespace form).
    pub search_order: SearchOrder,
    /// `skip-end-ips-in-cidr` (global only).
    pub skip_end_ips_in_cidr: bool,
    /// Everything worth telling the operator, in key order.
    pub problems: Vec<Problem>,
    /// Pools by key, with the ones whose value is bad.
    pools: BTreeMap<String, Result<Pool, Problem>>,
    /// `allow-share-<scope>` by scope, as the cloud provider reads it.
    allow_share: BTreeMap<String, bool>,
    /// `interface-<scope>` by scope; `None` for an empty value.
    interfaces: BTreeMap<String, Result<Option<String>, Problem>>,
}

/// The pool keys namespace `namespace` looks at, in the order it looks.
pub fn pool_keys(namespace: &str) -> [String; 4] {
    [
        format!("{CIDR_PREFIX}{namespace}"),
        format!("{CIDR_PREFIX}{GLOBAL}"),
        format!("{RANGE_PREFIX}{namespace}"),
        format!("{RANGE_PREFIX}{GLOBAL}"),
    ]
}

/// Whether `name` can be a namespace (a DNS-1123 label).
fn namespace_like(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| alnum(c) || c == '-')
        && name.starts_with(alnum)
        && name.ends_with(alnum)
}

impl PoolConfig {
    /// Reads the ConfigMap's `data`. Never fails: every bad value becomes
    /// a [`Problem`] naming its key.
    pub fn from_data(data: &BTreeMap<String, String>) -> PoolConfig {
        let mut config = PoolConfig::default();
        let problem = |key: &str, value: &str, kind| Problem {
            key: key.to_string(),
            value: value.to_string(),
            kind,
        };
        let mut problems = Vec::new();
        // The global settings first: pools depend on skip-end-ips-in-cidr.
        if let Some(value) = data.get(SEARCH_ORDER_KEY) {
            match value.as_str() {
                "desc" => config.search_order = SearchOrder::Descending,
                "asc" | "" => {}
                _ => problems.push(problem(
                    SEARCH_ORDER_KEY,
                    value,
                    ProblemKind::UnknownSearchOrder,
                )),
            }
        }
        if let Some(value) = data.get(SKIP_END_IPS_KEY) {
            match value.as_str() {
                "true" => config.skip_end_ips_in_cidr = true,
                "false" | "" => {}
                _ => problems.push(problem(
                    SKIP_END_IPS_KEY,
                    value,
                    ProblemKind::NotExactlyTrue,
                )),
            }
        }
        for (key, value) in data {
            if key == SEARCH_ORDER_KEY || key == SKIP_END_IPS_KEY {
                continue;
            }
            let scoped = [
                CIDR_PREFIX,
                RANGE_PREFIX,
                ALLOW_SHARE_PREFIX,
                INTERFACE_PREFIX,
            ]
            .into_iter()
            .find_map(|prefix| key.strip_prefix(prefix).map(|scope| (prefix, scope)));
            let Some((prefix, scope)) = scoped else {
                problems.push(problem(key, value, ProblemKind::UnknownKey));
                continue;
            };
            if scope != GLOBAL && !namespace_like(scope) {
                problems.push(problem(key, value, ProblemKind::NoSuchNamespace));
                continue;
            }
            match prefix {
                CIDR_PREFIX | RANGE_PREFIX => {
                    let entry = parse_pool(key, value, config.skip_end_ips_in_cidr)
                        .map_err(|kind| problem(key, value, kind));
                    let entry = match entry {
                        Err(bad) => {
                            problems.push(bad.clone());
                            Err(bad)
                        }
                        Ok((pool, warnings)) => {
                            problems.extend(warnings.into_iter().map(|w| problem(key, value, w)));
                            let meant = if prefix == CIDR_PREFIX {
                                PoolKind::Cidr
                            } else {
                                PoolKind::Range
                            };
                            if pool.kind != meant {
                                problems.push(problem(
                                    key,
                                    value,
                                    ProblemKind::ReadAs { kind: pool.kind },
                                ));
                            }
                            Ok(pool)
                        }
                    };
                    config.pools.insert(key.clone(), entry);
                }
                ALLOW_SHARE_PREFIX => {
                    let allowed = parse_go_bool(value).unwrap_or_else(|| {
                        problems.push(problem(key, value, ProblemKind::NotABoolean));
                        false
                    });
                    config.allow_share.insert(scope.to_string(), allowed);
                }
                _ => {
                    let interface = if value.is_empty() {
                        Ok(None)
                    } else if let Some(reason) = interface_name_rule(value.trim()) {
                        let bad = problem(key, value, ProblemKind::BadInterface { reason });
                        problems.push(bad.clone());
                        Err(bad)
                    } else {
                        Ok(Some(value.clone()))
                    };
                    config.interfaces.insert(scope.to_string(), interface);
                }
            }
        }
        config.problems = problems;
        config
    }

    /// These pools, with each pool key whose value is bad now taken from
    /// `last_good` when it was good there: a fence keeps what it knew while
    /// an edit is being fixed.
    pub fn patched(&self, last_good: &PoolConfig) -> PoolConfig {
        let mut out = self.clone();
        for (key, entry) in &mut out.pools {
            if entry.is_err()
                && let Some(Ok(good)) = last_good.pools.get(key)
            {
                *entry = Ok(good.clone());
            }
        }
        out
    }

    /// Every pool whose value is good, in key order.
    pub fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.pools.values().filter_map(|entry| entry.as_ref().ok())
    }

    /// The pool a Service in `namespace` takes its addresses from: the first
    /// present key of [`pool_keys`]. A present key with a bad or empty
    /// value is the answer too, as an error: the next key is not tried.
    pub fn lookup(&self, namespace: &str) -> Result<&Pool, IpamError> {
        for key in pool_keys(namespace) {
            if let Some(entry) = self.pools.get(&key) {
                return entry
                    .as_ref()
                    .map_err(|problem| IpamError::BadValue(problem.clone()));
            }
        }
        Err(IpamError::NoPool {
            namespace: namespace.to_string(),
        })
    }

    /// Whether Services in `namespace` may share an address:
    /// `allow-share-<namespace>` if present, else `allow-share-global`, else
    /// no. A present value that is no boolean means no (the global one is
    /// not consulted), as in the cloud provider.
    pub fn allow_share(&self, namespace: &str) -> bool {
        [namespace, GLOBAL]
            .iter()
            .find_map(|scope| self.allow_share.get(*scope))
            .copied()
            .unwrap_or(false)
    }

    /// The interface a Service in `namespace` is given
    /// (`kube-vip.io/serviceInterface`): `interface-<namespace>` if present,
    /// else `interface-global`. A present empty value means none (the global
    /// one is not consulted); a value that is no interface name is an error.
    pub fn interface(&self, namespace: &str) -> Result<Option<&str>, IpamError> {
        let entry = [namespace, GLOBAL]
            .iter()
            .find_map(|scope| self.interfaces.get(*scope));
        match entry {
            None => Ok(None),
            Some(Ok(name)) => Ok(name.as_deref()),
            Some(Err(problem)) => Err(IpamError::BadValue(problem.clone())),
        }
    }

    /// The fence of `kvip_restrict_to_pools=true`: whether a Service in
    /// `namespace` may have `address`. A namespace may use exactly the pool
    /// [`PoolConfig::lookup`] gives it — the first present key of
    /// `cidr-<namespace>`, `cidr-global`, `range-<namespace>`,
    /// `range-global` — the pool the allocator itself would take from. The
    /// whole value counts (the ends `skip-end-ips-in-cidr` drops and IPv4
    /// .0/.255 included: a user may choose them by hand). A namespace with
    /// no pool, or whose pool is bad or the DHCP marker, may use no address.
    pub fn admits(&self, namespace: &str, address: &IpAddr) -> bool {
        self.lookup(namespace)
            .is_ok_and(|pool| pool.contains(address))
    }
}

/// Reads one pool value, as the cloud provider reads it; with the pool, the
/// problems that do not stop it from working.
fn parse_pool(
    key: &str,
    value: &str,
    skip_ends: bool,
) -> Result<(Pool, Vec<ProblemKind>), ProblemKind> {
    if value.is_empty() {
        return Err(ProblemKind::EmptyPool);
    }
    let kind = if value.contains('/') {
        PoolKind::Cidr
    } else {
        PoolKind::Range
    };
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut warnings = Vec::new();
    for item in value.split(',') {
        let bad = |reason| ProblemKind::BadItem {
            item: item.to_string(),
            reason,
        };
        if item.is_empty() {
            return Err(bad("is empty (a comma too many?)"));
        }
        if item.chars().any(char::is_whitespace) {
            return Err(bad(
                "contains white space, which kube-vip-cloud-provider refuses too; write the list without spaces or line breaks",
            ));
        }
        let (family, first, last) = match kind {
            PoolKind::Cidr => parse_cidr(item).map_err(bad)?,
            PoolKind::Range => parse_range(item).map_err(bad)?,
        };
        if let Some(&(_, _, _, what)) = UNUSABLE
            .iter()
            .find(|(f, low, high, _)| *f == family && first <= *high && last >= *low)
        {
            warnings.push(ProblemKind::Unusable {
                item: item.to_string(),
                what,
            });
        }
        match family {
            Family::V4 => v4.push((first, last)),
            Family::V6 => v6.push((first, last)),
        }
    }
    let v4 = RangeSet::new(v4);
    let v6 = RangeSet::new(v6);
    let ipv4_dhcp = kind == PoolKind::Cidr && v4.0 == [(0, 0)];
    let offered_v4 = if kind == PoolKind::Cidr && skip_ends {
        RangeSet::new(
            v4.ipv4_blocks()
                .into_iter()
                .map(|(first, last, bits)| {
                    if bits >= 31 {
                        (first, last)
                    } else {
                        (first + 1, last - 1)
                    }
                })
                .collect(),
        )
    } else {
        v4.clone()
    };
    let pool = Pool {
        key: key.to_string(),
        kind,
        dhcp: value == DHCP_MARKER,
        ipv4_dhcp,
        v4: FamilyPool {
            written: v4,
            offered: offered_v4,
        },
        v6: FamilyPool {
            written: v6.clone(),
            offered: v6,
        },
    };
    Ok((pool, warnings))
}

/// Addresses kvip refuses as a Service's VIP that the cloud provider would
/// hand out: (family, first, last, what they are). IPv4 0.0.0.0 and
/// 255.255.255.255 are missing since they end in .0 and .255.
const UNUSABLE: [(Family, u128, u128, &str); 8] = [
    (Family::V4, 0x7f00_0000, 0x7fff_ffff, "loopback addresses"),
    (Family::V4, 0xa9fe_0000, 0xa9fe_ffff, "link-local addresses"),
    (Family::V4, 0xe000_0000, 0xefff_ffff, "multicast addresses"),
    (Family::V6, 0, 0, "the unspecified address ::"),
    (Family::V6, 1, 1, "the loopback address ::1"),
    (
        Family::V6,
        0xffff_0000_0000,
        0xffff_ffff_ffff,
        "IPv4-mapped addresses",
    ),
    (
        Family::V6,
        0xfe80 << 112,
        (0xfec0 << 112) - 1,
        "link-local addresses",
    ),
    (Family::V6, 0xff00 << 112, u128::MAX, "multicast addresses"),
];

fn parse_address(text: &str) -> Result<(Family, u128), &'static str> {
    text.parse::<IpAddr>()
        .map(|address| number(&address))
        .map_err(|_| "is not an IP address")
}

/// `address/bits` as Go's `netip.ParsePrefix` reads it: host bits may be
/// set (they are masked), the length is decimal without sign or leading zero.
fn parse_cidr(item: &str) -> Result<(Family, u128, u128), &'static str> {
    let Some((address, bits)) = item.rsplit_once('/') else {
        return Err(
            "is not a CIDR such as 192.168.0.0/24 (a value with a / anywhere is read as a list of CIDRs)",
        );
    };
    let (family, n) = parse_address(address)?;
    let width = match family {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    let bits: u32 = if !bits.is_empty()
        && bits.chars().all(|c| c.is_ascii_digit())
        && (bits.len() == 1 || !bits.starts_with('0'))
    {
        bits.parse().unwrap_or(u32::MAX)
    } else {
        u32::MAX
    };
    if bits > width {
        return Err(
            "has a bad prefix length (0 to 32 for IPv4, 0 to 128 for IPv6, no leading zero)",
        );
    }
    let host = match width - bits {
        128 => u128::MAX,
        host_bits => (1u128 << host_bits) - 1,
    };
    let first = n & !host;
    Ok((family, first, first | host))
}

/// `first-last`, both ends included.
fn parse_range(item: &str) -> Result<(Family, u128, u128), &'static str> {
    let mut ends = item.split('-');
    let (Some(first), Some(last), None) = (ends.next(), ends.next(), ends.next()) else {
        return Err(
            "is not a range such as 192.168.0.10-192.168.0.20 (a value without / is read as a list of ranges)",
        );
    };
    let (family, first) = parse_address(first)?;
    let (last_family, last) = parse_address(last)?;
    if family != last_family {
        return Err("mixes IPv4 and IPv6");
    }
    if first > last {
        return Err("starts after it ends");
    }
    Ok((family, first, last))
}

/// A Service that holds addresses, as allocation needs it.
///
/// The cloud provider counts only Services labelled
/// [`IMPLEMENTATION_LABEL`]`=`[`IMPLEMENTATION_LABEL_VALUE`] and only their
/// `kube-vip.io/loadbalancerIPs`; kvip should pass every Service whose
/// addresses it knows, so an address set by hand is not handed out again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddressUse {
    /// The Service.
    pub service: ServiceKey,
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
    /// `spec.ports` as (protocol, port); none makes its addresses unshareable.
    pub ports: Vec<(String, u16)>,
}

/// A Service that needs addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Request {
    /// The Service; its namespace picks the pool.
    pub service: ServiceKey,
    /// `spec.ipFamilyPolicy`; `None` is read as single-stack.
    pub policy: Option<FamilyPolicy>,
    /// `spec.ipFamilies`, in order; may be empty.
    pub families: Vec<Family>,
    /// `spec.ports` as (protocol, port); sharing compares port numbers only.
    pub ports: Vec<(String, u16)>,
}

impl Request {
    /// What `input` asks for.
    pub fn of(input: &ServiceInput) -> Request {
        Request {
            service: input.key.clone(),
            policy: input
                .ip_family_policy
                .as_deref()
                .and_then(FamilyPolicy::from_kubernetes),
            families: input
                .ip_families
                .iter()
                .filter_map(|f| Family::from_kubernetes(f))
                .collect(),
            ports: input.ports.clone(),
        }
    }
}

/// The addresses a Service is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allocation {
    /// One per family, the Service's first family first: the order of
    /// `kube-vip.io/loadbalancerIPs` ([`Allocation::annotation`]).
    pub addresses: Vec<IpAddr>,
    /// The key of the pool they came from.
    pub pool: String,
    /// `kube-vip.io/serviceInterface` to write, from `interface-<namespace>`
    /// or `interface-global`.
    pub interface: Option<String>,
    /// The Services already on the IPv4 address, when it is shared.
    pub shared_with: Vec<ServiceKey>,
    /// `PreferDualStack`: families the pool has but could not serve, every
    /// address being in use; the Service is single-stack for now.
    pub exhausted: Vec<Family>,
}

impl Allocation {
    /// The value of `kube-vip.io/loadbalancerIPs`.
    pub fn annotation(&self) -> String {
        self.addresses
            .iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Used addresses by family, as numbers.
#[derive(Default)]
struct Used {
    v4: BTreeSet<u128>,
    v6: BTreeSet<u128>,
}

impl Used {
    fn new<'a>(uses: impl IntoIterator<Item = &'a AddressUse>) -> Used {
        let mut used = Used::default();
        for address in uses.into_iter().flat_map(|u| &u.addresses) {
            match number(address) {
                (Family::V4, n) => used.v4.insert(n),
                (Family::V6, n) => used.v6.insert(n),
            };
        }
        used
    }

    fn of(&self, family: Family) -> &BTreeSet<u128> {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }
}

/// An IPv4 address in use that the new Service may share: the first in the
/// search order whose Services are all in its namespace, all have ports,
/// and use none of its port numbers; only addresses the pool hands out.
fn shareable(
    pool: &Pool,
    order: SearchOrder,
    request: &Request,
    others: &[&AddressUse],
) -> Option<(u128, Vec<ServiceKey>)> {
    struct Holders {
        ports: BTreeSet<u16>,
        shareable: bool,
        services: BTreeSet<ServiceKey>,
    }
    let wanted: BTreeSet<u16> = request.ports.iter().map(|(_, port)| *port).collect();
    let mut by_address: BTreeMap<u128, Holders> = BTreeMap::new();
    for other in others {
        for address in &other.addresses {
            let (Family::V4, n) = number(address) else {
                continue;
            };
            let holders = by_address.entry(n).or_insert_with(|| Holders {
                ports: BTreeSet::new(),
                shareable: true,
                services: BTreeSet::new(),
            });
            holders.shareable &=
                other.service.namespace == request.service.namespace && !other.ports.is_empty();
            holders
                .ports
                .extend(other.ports.iter().map(|(_, port)| *port));
            holders.services.insert(other.service.clone());
        }
    }
    let fits = |(n, holders): &(&u128, &Holders)| {
        holders.shareable
            && pool.v4.offered.hands_out(Family::V4, **n)
            && holders.ports.is_disjoint(&wanted)
    };
    let found = match order {
        SearchOrder::Ascending => by_address.iter().find(fits),
        SearchOrder::Descending => by_address.iter().rev().find(fits),
    };
    found.map(|(n, holders)| (*n, holders.services.iter().cloned().collect()))
}

/// The addresses for `request` from its namespace's pool, given the
/// addresses `in_use` by Services of every namespace (an entry for the
/// requesting Service itself is ignored). See the module docs for the rule.
pub fn allocate(
    config: &PoolConfig,
    request: &Request,
    in_use: &[AddressUse],
) -> Result<Allocation, IpamError> {
    let namespace = &request.service.namespace;
    let pool = config.lookup(namespace)?;
    let key = || pool.key.clone();
    if pool.dhcp {
        return Err(IpamError::Dhcp { key: key() });
    }
    let interface = config.interface(namespace)?.map(str::to_string);
    let others: Vec<&AddressUse> = in_use
        .iter()
        .filter(|u| u.service != request.service)
        .collect();
    let used = Used::new(others.iter().copied());
    let shared = if config.allow_share(namespace) {
        shareable(pool, config.search_order, request, &others)
    } else {
        None
    };
    let first = request.families.first().copied();
    let policy = request.policy.unwrap_or(FamilyPolicy::SingleStack);
    let families: Vec<Family> = match policy {
        FamilyPolicy::SingleStack => {
            let family = first.unwrap_or(if pool.has(Family::V4) {
                Family::V4
            } else {
                Family::V6
            });
            vec![family]
        }
        FamilyPolicy::RequireDualStack => {
            let primary = first.unwrap_or(Family::V4);
            vec![primary, primary.other()]
        }
        FamilyPolicy::PreferDualStack => {
            let primary = first.unwrap_or(Family::V4);
            let mut wanted = vec![primary, primary.other()];
            // Only families the Service lists: kvip refuses the others on it.
            if !request.families.is_empty() {
                wanted.retain(|family| request.families.contains(family));
            }
            wanted
        }
    };
    if policy != FamilyPolicy::PreferDualStack {
        let missing = [Family::V4, Family::V6]
            .into_iter()
            .find(|family| families.contains(family) && !pool.has(*family));
        if let Some(family) = missing {
            return Err(IpamError::NoPoolForFamily { key: key(), family });
        }
    }

    let mut addresses = Vec::new();
    let mut exhausted = Vec::new();
    let mut shared_with = Vec::new();
    for &family in families.iter().filter(|family| pool.has(**family)) {
        if family == Family::V4 {
            if let Some((n, services)) = &shared {
                addresses.push(family.to_addr(*n));
                shared_with = services.clone();
                continue;
            }
            if pool.ipv4_dhcp {
                return Err(IpamError::Dhcp { key: key() });
            }
        }
        let offered = &pool.family(family).offered;
        match offered.first_free(family, config.search_order, used.of(family)) {
            Some(n) => addresses.push(family.to_addr(n)),
            None => exhausted.push(family),
        }
    }
    let complete = match policy {
        FamilyPolicy::PreferDualStack => !addresses.is_empty(),
        _ => exhausted.is_empty(),
    };
    if !complete {
        return Err(match (exhausted.is_empty(), families.first()) {
            (true, Some(&family)) => IpamError::NoPoolForFamily { key: key(), family },
            _ => IpamError::PoolExhausted {
                key: key(),
                families: exhausted,
            },
        });
    }
    Ok(Allocation {
        addresses,
        pool: key(),
        interface,
        shared_with,
        exhausted,
    })
}

/// Every address a Service names anywhere — `kube-vip.io/loadbalancerIPs`
/// item by item, `spec.loadBalancerIP`, `status.loadBalancer.ingress` —
/// whether or not it is valid as a VIP: what such a Service may be using.
pub fn named_addresses(input: &ServiceInput) -> Vec<IpAddr> {
    let annotation = input
        .annotations
        .get(crate::service::LOADBALANCER_IPS_ANNOTATION)
        .map(String::as_str)
        .unwrap_or_default();
    let mut out: Vec<IpAddr> = annotation
        .split(',')
        .chain(input.load_balancer_ip.as_deref())
        .chain(input.ingress_ips.iter().map(String::as_str))
        .filter_map(|text| text.trim().parse().ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The Services of one picture of the cluster as the pools see them:
/// those of ours (served by this daemon's class rule) that name no address
/// anywhere, oldest first, and every LoadBalancer Service's addresses,
/// whoever serves it, ignored or refused ones too ([`named_addresses`]). A
/// Service turned into another type, or deleted, uses nothing.
pub fn requests_and_uses(
    inputs: &[ServiceInput],
    class: &LbClassRule,
) -> (Vec<(i64, Request)>, Vec<AddressUse>) {
    let mut requests = Vec::new();
    let mut uses = Vec::new();
    for input in inputs {
        if input.type_ != crate::service::LOAD_BALANCER_TYPE {
            continue;
        }
        let named = named_addresses(input);
        if !named.is_empty() {
            uses.push(AddressUse {
                service: input.key.clone(),
                addresses: named,
                ports: input.ports.clone(),
            });
            continue;
        }
        if let Ok(Some(view)) = ServiceView::from_input(input, class)
            && view.addresses.is_empty()
        {
            requests.push((input.created, Request::of(input)));
        }
    }
    requests.sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| x.service.cmp(&y.service)));
    (requests, uses)
}

/// `kvip_restrict_to_pools=true`: the Services of ours (by `class`) that
/// name an address outside the pool their namespace may use, each with the
/// first such address. `pools` is `None` when there is no `kubevip`
/// ConfigMap: then no address is inside. A namespace whose pool key holds a
/// bad value is not fenced (nothing known to fence by). These Services are left out of the
/// assessment, so they claim nothing against anyone.
pub fn outside_pools(
    inputs: &[ServiceInput],
    class: &LbClassRule,
    pools: Option<&PoolConfig>,
) -> BTreeMap<ServiceKey, PendingReason> {
    let mut out = BTreeMap::new();
    for input in inputs {
        let Ok(Some(_)) = ServiceView::from_input(input, class) else {
            continue;
        };
        let pool = match pools.map(|p| p.lookup(&input.key.namespace)) {
            Some(Ok(pool)) => Some(pool),
            // A value being fixed, never good before (the daemon keeps the
            // last good one otherwise): nothing known to fence by.
            Some(Err(IpamError::BadValue(_))) => continue,
            _ => None,
        };
        let outside = named_addresses(input)
            .into_iter()
            .find(|address| !pool.is_some_and(|p| p.contains(address)));
        if let Some(address) = outside {
            out.insert(
                input.key.clone(),
                PendingReason::AddressOutsidePools {
                    address,
                    pool: pool.map(|p| p.key.clone()),
                },
            );
        }
    }
    out
}

/// What the pools decide for the Services waiting for an address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The addresses to write, in the order they were chosen.
    pub allocations: Vec<(Request, Allocation)>,
    /// The Services the pools can give nothing, and why.
    pub refused: BTreeMap<ServiceKey, IpamError>,
}

/// Allocates for each of `requests` in turn (oldest first), each address
/// handed out counting as used for the next: one decision for a burst of
/// new Services never hands one address out twice.
pub fn allocate_all(config: &PoolConfig, requests: &[Request], in_use: &[AddressUse]) -> Outcome {
    let mut used: Vec<AddressUse> = in_use.to_vec();
    let mut outcome = Outcome::default();
    for request in requests {
        match allocate(config, request, &used) {
            Ok(allocation) => {
                used.push(AddressUse {
                    service: request.service.clone(),
                    addresses: allocation.addresses.clone(),
                    ports: request.ports.clone(),
                });
                outcome.allocations.push((request.clone(), allocation));
            }
            Err(e) => {
                outcome.refused.insert(request.service.clone(), e);
            }
        }
    }
    outcome
}

/// The first address of `mine` that another Service of `in_use` also has
/// where the pools would not have let them share it: another namespace,
/// sharing not allowed there, an IPv6 address, a Service without ports, or
/// a port number both use. With that Service. An allocation racing another
/// allocator (kube-vip-cloud-provider during a migration) is found by it.
pub fn clash<'a>(
    config: &PoolConfig,
    mine: &AddressUse,
    in_use: &'a [AddressUse],
) -> Option<(IpAddr, &'a ServiceKey)> {
    let ports: BTreeSet<u16> = mine.ports.iter().map(|(_, port)| *port).collect();
    let namespace = &mine.service.namespace;
    mine.addresses.iter().find_map(|address| {
        in_use
            .iter()
            .filter(|other| other.service != mine.service && other.addresses.contains(address))
            .find(|other| {
                let shares = address.is_ipv4()
                    && other.service.namespace == *namespace
                    && config.allow_share(namespace)
                    && !ports.is_empty()
                    && !other.ports.is_empty()
                    && other.ports.iter().all(|(_, port)| !ports.contains(port));
                !shares
            })
            .map(|other| (*address, &other.service))
    })
}

/// How full one family of a pool is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FamilyUsage {
    /// The family.
    pub family: Family,
    /// Addresses the pool may hand out (saturating at `u128::MAX` for `::/0`).
    pub size: u128,
    /// Of those, addresses some Service uses (a shared address counts once).
    pub used: u128,
    /// `size - used`: addresses still free for a new, unshared Service.
    pub free: u128,
}

/// How full one pool is, for `kvip status` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolUsage {
    /// The pool's key.
    pub key: String,
    /// One entry per family the pool names, IPv4 first.
    pub families: Vec<FamilyUsage>,
}

/// Used and free addresses of every good pool, in key order, counted from
/// the ranges without visiting the addresses. An address counts as used in
/// every pool that may hand it out, whoever uses it.
pub fn pool_usage(config: &PoolConfig, in_use: &[AddressUse]) -> Vec<PoolUsage> {
    let used = Used::new(in_use);
    config
        .pools()
        .map(|pool| PoolUsage {
            key: pool.key.clone(),
            families: [Family::V4, Family::V6]
                .into_iter()
                .filter(|family| pool.has(*family))
                .map(|family| {
                    let offered = &pool.family(family).offered;
                    let size = if pool.dhcp || (family == Family::V4 && pool.ipv4_dhcp) {
                        0
                    } else {
                        offered.size(family)
                    };
                    let taken = used
                        .of(family)
                        .iter()
                        .filter(|n| size > 0 && offered.hands_out(family, **n))
                        .count() as u128;
                    FamilyUsage {
                        family,
                        size,
                        used: taken,
                        free: size.saturating_sub(taken),
                    }
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::testing::pools as cm;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn tcp(ports: &[u16]) -> Vec<(String, u16)> {
        ports.iter().map(|p| ("TCP".to_string(), *p)).collect()
    }

    fn request(
        namespace: &str,
        policy: Option<FamilyPolicy>,
        families: &[Family],
        ports: Vec<(String, u16)>,
    ) -> Request {
        Request {
            service: ServiceKey::new(namespace, "new"),
            policy,
            families: families.to_vec(),
            ports,
        }
    }

    fn held(
        namespace: &str,
        name: &str,
        addresses: &[&str],
        ports: Vec<(String, u16)>,
    ) -> AddressUse {
        AddressUse {
            service: ServiceKey::new(namespace, name),
            addresses: addresses.iter().map(|a| ip(a)).collect(),
            ports,
        }
    }

    /// Addresses held by one unshareable Service in another namespace.
    fn taken(addresses: &[&str]) -> Vec<AddressUse> {
        vec![held("elsewhere", "held", addresses, vec![])]
    }

    fn pool_key(value: &str) -> &'static str {
        if value.contains('/') {
            "cidr-global"
        } else {
            "range-global"
        }
    }

    /// The address a single-stack Service without families gets from a
    /// global pool `value`, with `used` taken.
    fn first(value: &str, settings: &[(&str, &str)], used: &[&str]) -> Result<String, IpamError> {
        let mut pairs = vec![(pool_key(value), value)];
        pairs.extend_from_slice(settings);
        allocate(
            &cm(&pairs),
            &request("default", None, &[], vec![]),
            &taken(used),
        )
        .map(|a| a.annotation())
    }

    const DESC: (&str, &str) = (SEARCH_ORDER_KEY, "desc");
    const SKIP: (&str, &str) = (SKIP_END_IPS_KEY, "true");

    /// Every address a pool may hand out, both families (small pools only).
    fn handed_out(value: &str, settings: &[(&str, &str)]) -> Vec<IpAddr> {
        let mut pairs = vec![(pool_key(value), value)];
        pairs.extend_from_slice(settings);
        let config = cm(&pairs);
        let pool = config.lookup("default").unwrap();
        [Family::V4, Family::V6]
            .into_iter()
            .flat_map(|f| enumerate(&pool.offered(f)))
            .collect()
    }

    fn enumerate(ranges: &[AddressRange]) -> Vec<IpAddr> {
        let mut out = Vec::new();
        for range in ranges {
            let (family, first) = number(&range.first);
            let (_, last) = number(&range.last);
            assert!(last - first < 100_000, "test pools are small");
            out.extend((first..=last).map(|n| family.to_addr(n)));
        }
        out
    }

    fn written(config: &PoolConfig, namespace: &str, family: Family) -> String {
        config
            .lookup(namespace)
            .unwrap()
            .written(family)
            .iter()
            .map(|r| format!("{}-{}", r.first, r.last))
            .collect::<Vec<_>>()
            .join(",")
    }

    // kube-vip-cloud-provider v0.0.12's own cases (pkg/ipam/ipam_test.go,
    // pkg/provider/loadBalancer_test.go), same inputs and outputs.

    #[test]
    fn cloud_provider_ranges_become_address_sets() {
        let table: &[(&str, &[&str])] = &[
            ("192.168.0.10-192.168.0.10", &["192.168.0.10"]),
            (
                "192.168.0.10-192.168.0.12",
                &["192.168.0.10", "192.168.0.11", "192.168.0.12"],
            ),
            (
                "192.168.0.253-192.168.1.2",
                &[
                    "192.168.0.253",
                    "192.168.0.254",
                    "192.168.0.255",
                    "192.168.1.0",
                    "192.168.1.1",
                    "192.168.1.2",
                ],
            ),
            (
                "192.168.0.10-192.168.0.11,192.168.1.20-192.168.1.21",
                &[
                    "192.168.0.10",
                    "192.168.0.11",
                    "192.168.1.20",
                    "192.168.1.21",
                ],
            ),
            (
                "192.168.0.10-192.168.0.11,192.168.0.10-192.168.0.13",
                &[
                    "192.168.0.10",
                    "192.168.0.11",
                    "192.168.0.12",
                    "192.168.0.13",
                ],
            ),
            ("fe80::13-fe80::14", &["fe80::13", "fe80::14"]),
            (
                "fe80::ffff-fe80::1:3",
                &[
                    "fe80::ffff",
                    "fe80::1:0",
                    "fe80::1:1",
                    "fe80::1:2",
                    "fe80::1:3",
                ],
            ),
            (
                "fe80::10-fe80::12,fe81::13-fe81::14",
                &["fe80::10", "fe80::11", "fe80::12", "fe81::13", "fe81::14"],
            ),
            (
                "fe80::10-fe80::12,fe80::10-fe80::14",
                &["fe80::10", "fe80::11", "fe80::12", "fe80::13", "fe80::14"],
            ),
        ];
        for (value, want) in table {
            let want: Vec<IpAddr> = want.iter().map(|a| ip(a)).collect();
            assert_eq!(handed_out(value, &[]), want, "{value}");
        }
    }

    #[test]
    fn cloud_provider_cidrs_become_address_sets() {
        let table: &[(&str, bool, &[&str])] = &[
            ("192.168.0.200/32", false, &["192.168.0.200"]),
            ("192.168.0.200/32", true, &["192.168.0.200"]),
            (
                "192.168.0.200/30",
                false,
                &[
                    "192.168.0.200",
                    "192.168.0.201",
                    "192.168.0.202",
                    "192.168.0.203",
                ],
            ),
            (
                "192.168.0.200/30",
                true,
                &["192.168.0.201", "192.168.0.202"],
            ),
            (
                "192.168.0.200/31",
                true,
                &["192.168.0.200", "192.168.0.201"],
            ),
            (
                "192.168.0.200/30,192.168.0.200/29",
                false,
                &[
                    "192.168.0.200",
                    "192.168.0.201",
                    "192.168.0.202",
                    "192.168.0.203",
                    "192.168.0.204",
                    "192.168.0.205",
                    "192.168.0.206",
                    "192.168.0.207",
                ],
            ),
            (
                "192.168.0.200/30,192.168.0.200/29",
                true,
                &[
                    "192.168.0.201",
                    "192.168.0.202",
                    "192.168.0.203",
                    "192.168.0.204",
                    "192.168.0.205",
                    "192.168.0.206",
                ],
            ),
            ("fe80::10/127", false, &["fe80::10", "fe80::11"]),
            (
                "fe80::10/127,fe80::fe/127",
                false,
                &["fe80::10", "fe80::11", "fe80::fe", "fe80::ff"],
            ),
            (
                "fe80::10/126,fe80::12/127",
                false,
                &["fe80::10", "fe80::11", "fe80::12", "fe80::13"],
            ),
        ];
        for (value, skip, want) in table {
            let settings: &[(&str, &str)] = if *skip { &[SKIP] } else { &[] };
            let want: Vec<IpAddr> = want.iter().map(|a| ip(a)).collect();
            assert_eq!(handed_out(value, settings), want, "{value} skip={skip}");
        }
    }

    #[test]
    fn cloud_provider_lists_split_by_family() {
        let table: &[(&str, &str, &str)] = &[
            ("192.168.0.200/30", "192.168.0.200-192.168.0.203", ""),
            (
                "192.168.0.200/30,192.168.1.200/30",
                "192.168.0.200-192.168.0.203,192.168.1.200-192.168.1.203",
                "",
            ),
            ("fe80::10/127", "", "fe80::10-fe80::11"),
            (
                "fe80::10/127,fe80::fe/127",
                "",
                "fe80::10-fe80::11,fe80::fe-fe80::ff",
            ),
            (
                "192.168.0.200/30,fe80::10/127",
                "192.168.0.200-192.168.0.203",
                "fe80::10-fe80::11",
            ),
            (
                "192.168.0.200/30,192.168.1.200/30,fe80::10/127,fe80::fe/127",
                "192.168.0.200-192.168.0.203,192.168.1.200-192.168.1.203",
                "fe80::10-fe80::11,fe80::fe-fe80::ff",
            ),
            ("192.168.0.10-192.168.0.12", "192.168.0.10-192.168.0.12", ""),
            (
                "192.168.0.10-192.168.0.12,192.168.0.100-192.168.0.120",
                "192.168.0.10-192.168.0.12,192.168.0.100-192.168.0.120",
                "",
            ),
            ("fe80::13-fe80::14", "", "fe80::13-fe80::14"),
            (
                "fe80::13-fe80::14,fe80::130-fe80::140",
                "",
                "fe80::13-fe80::14,fe80::130-fe80::140",
            ),
            (
                "192.168.0.10-192.168.0.12,fe80::13-fe80::14",
                "192.168.0.10-192.168.0.12",
                "fe80::13-fe80::14",
            ),
            (
                "192.168.0.10-192.168.0.12,192.168.0.100-192.168.0.120,fe80::13-fe80::14,fe80::130-fe80::140",
                "192.168.0.10-192.168.0.12,192.168.0.100-192.168.0.120",
                "fe80::13-fe80::14,fe80::130-fe80::140",
            ),
        ];
        for (value, v4, v6) in table {
            let config = cm(&[(pool_key(value), value)]);
            assert_eq!(written(&config, "any", Family::V4), *v4, "{value}");
            assert_eq!(written(&config, "any", Family::V6), *v6, "{value}");
        }
    }

    #[test]
    fn cloud_provider_first_free_in_ranges() {
        let table: &[(&str, &[&str], bool, &str)] = &[
            ("192.168.0.10-192.168.0.10", &[], false, "192.168.0.10"),
            ("192.168.0.10-192.168.0.10", &[], true, "192.168.0.10"),
            ("192.168.0.10-192.168.0.12", &[], false, "192.168.0.10"),
            ("192.168.0.10-192.168.0.12", &[], true, "192.168.0.12"),
            (
                "192.168.0.253-192.168.1.2",
                &["192.168.0.253", "192.168.0.254"],
                false,
                "192.168.1.1",
            ),
            (
                "192.168.0.253-192.168.1.2",
                &["192.168.1.1", "192.168.1.2"],
                true,
                "192.168.0.254",
            ),
            (
                "192.168.0.10-192.168.0.11,192.168.1.20-192.168.1.21",
                &["192.168.0.9", "192.168.0.10"],
                false,
                "192.168.0.11",
            ),
            (
                "192.168.0.10-192.168.0.11,192.168.1.20-192.168.1.22",
                &["192.168.1.21", "192.168.1.22"],
                true,
                "192.168.1.20",
            ),
            ("fe80::13-fe80::14", &[], false, "fe80::13"),
            ("fe80::13-fe80::14", &[], true, "fe80::14"),
            ("fe80::13-fe80::15", &[], false, "fe80::13"),
            ("fe80::13-fe80::15", &[], true, "fe80::15"),
            ("fe80::ffff-fe80::1:3", &["fe80::ffff"], false, "fe80::1:0"),
            (
                "fe80::ffff-fe80::1:3",
                &["fe80::1:3", "fe80::1:2", "fe80::1:1", "fe80::1:0"],
                true,
                "fe80::ffff",
            ),
            (
                "fe80::10-fe80::12,fe81::20-fe81::21",
                &["fe80::10", "fe80::11", "fe80::12"],
                false,
                "fe81::20",
            ),
            (
                "fe80::10-fe80::12,fe81::20-fe81::21",
                &["fe81::21", "fe81::20"],
                true,
                "fe80::12",
            ),
            // pkg/provider: discoverAddress with ranges.
            (
                "10.10.10.8-10.10.10.15",
                &["10.10.10.8", "10.10.10.9", "10.10.10.10", "10.10.10.12"],
                false,
                "10.10.10.11",
            ),
            (
                "192.168.1.1-192.168.1.254",
                &[
                    "10.10.10.8",
                    "172.16.0.3",
                    "192.168.1.1",
                    "10.10.10.9",
                    "10.10.10.10",
                    "172.16.0.4",
                    "192.168.1.2",
                    "10.10.10.12",
                ],
                false,
                "192.168.1.3",
            ),
            (
                "fe80::ffff-fe80::1:3",
                &["fe80::ffff", "fe80::1:0", "fe80::1:1"],
                false,
                "fe80::1:2",
            ),
        ];
        for (value, used, desc, want) in table {
            let settings: &[(&str, &str)] = if *desc { &[DESC] } else { &[] };
            assert_eq!(
                first(value, settings, used).as_deref(),
                Ok(*want),
                "{value} used {used:?} desc={desc}"
            );
        }
    }

    #[test]
    fn cloud_provider_first_free_in_cidrs() {
        let none: &[(&str, &str)] = &[];
        type Case<'a> = (
            &'a str,
            &'a [&'a str],
            &'a [(&'a str, &'a str)],
            Option<&'a str>,
        );
        let table: &[Case] = &[
            ("192.168.0.200/30", &[], none, Some("192.168.0.200")),
            ("192.168.0.200/30", &[], &[SKIP], Some("192.168.0.201")),
            ("192.168.0.200/30", &[], &[DESC], Some("192.168.0.203")),
            (
                "192.168.0.200/30",
                &[],
                &[DESC, SKIP],
                Some("192.168.0.202"),
            ),
            ("192.168.0.10/24", &[], none, Some("192.168.0.1")),
            ("192.168.0.10/24", &[], &[DESC], Some("192.168.0.254")),
            (
                "192.168.0.255/30",
                &["192.168.0.254", "192.168.0.252", "192.168.0.253"],
                none,
                None,
            ),
            (
                "192.168.0.255/30",
                &["192.168.0.254", "192.168.0.252", "192.168.0.253"],
                &[DESC],
                None,
            ),
            (
                "192.168.0.200/30,192.168.0.200/29",
                &["192.168.0.201", "192.168.0.202"],
                none,
                Some("192.168.0.200"),
            ),
            (
                "192.168.0.200/30,192.168.0.200/29",
                &["192.168.0.201", "192.168.0.202"],
                &[SKIP],
                Some("192.168.0.203"),
            ),
            (
                "192.168.0.200/30,192.168.0.200/29",
                &["192.168.0.201", "192.168.0.202"],
                &[DESC],
                Some("192.168.0.207"),
            ),
            (
                "192.168.0.200/30,192.168.0.200/29",
                &["192.168.0.201", "192.168.0.202"],
                &[DESC, SKIP],
                Some("192.168.0.206"),
            ),
            ("2001::49fe/127", &[], none, Some("2001::49fe")),
            ("2001::49fe/127", &[], &[SKIP], Some("2001::49fe")),
            ("2001::49fe/127", &[], &[DESC], Some("2001::49ff")),
            ("2001::49fe/127", &["2001::49fe", "2001::49ff"], none, None),
            (
                "2001::49fe/127",
                &["2001::49fe", "2001::49ff"],
                &[DESC],
                None,
            ),
            (
                "2001::10/126,2001::12/127",
                &["2001::10", "2001::11"],
                none,
                Some("2001::12"),
            ),
            (
                "2001::10/126,2001::12/127",
                &["2001::10", "2001::11"],
                &[DESC],
                Some("2001::13"),
            ),
            // pkg/provider: discoverAddress with CIDRs.
            (
                "10.10.10.8/29",
                &["10.10.10.8", "10.10.10.9", "10.10.10.10", "10.10.10.12"],
                none,
                Some("10.10.10.11"),
            ),
            (
                "192.168.1.1/24",
                &[
                    "10.10.10.8",
                    "172.16.0.3",
                    "192.168.1.1",
                    "10.10.10.9",
                    "10.10.10.10",
                    "172.16.0.4",
                    "192.168.1.2",
                    "10.10.10.12",
                ],
                none,
                Some("192.168.1.3"),
            ),
            (
                "fe80::10/126",
                &["fe80::10", "fe80::11", "fe80::12"],
                none,
                Some("fe80::13"),
            ),
        ];
        for (value, used, settings, want) in table {
            let got = first(value, settings, used);
            match want {
                Some(want) => assert_eq!(got.as_deref(), Ok(*want), "{value} {settings:?}"),
                None => assert!(
                    matches!(&got, Err(IpamError::PoolExhausted { key, .. }) if key == "cidr-global"),
                    "{value} {settings:?}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn cloud_provider_pool_lookup() {
        let cidrs = cm(&[
            ("cidr-dummystart", "172.16.0.1/24"),
            ("cidr-global", "192.168.1.1/24"),
            ("cidr-system", "10.10.10.8/29"),
            ("allow-share-system", "true"),
            ("cidr-dummyend", "172.16.0.2/24"),
            ("cidr-ipv6", "2001::10/127"),
        ]);
        for (namespace, key, share) in [
            ("system", "cidr-system", true),
            ("ipv6", "cidr-ipv6", false),
            ("basic", "cidr-global", false),
        ] {
            assert_eq!(cidrs.lookup(namespace).unwrap().key, key);
            assert_eq!(cidrs.allow_share(namespace), share, "{namespace}");
        }
        let ranges = cm(&[
            ("range-dummystart", "172.16.0.1-172.16.0.254"),
            ("range-global", "192.168.1.1-192.168.1.254"),
            ("range-system", "10.10.10.8-10.10.10.15"),
            ("range-dummyend", "172.16.1.1-172.16.1.254"),
            ("cidr-ipv6", "2001::10-2001::20"),
        ]);
        for (namespace, key) in [
            ("system", "range-system"),
            ("ipv6", "cidr-ipv6"),
            ("basic", "range-global"),
        ] {
            assert_eq!(ranges.lookup(namespace).unwrap().key, key);
        }
        // A cidr- key holding a range is read as a range, as the cloud provider reads it.
        assert_eq!(ranges.lookup("ipv6").unwrap().kind, PoolKind::Range);
        assert_eq!(written(&ranges, "ipv6", Family::V6), "2001::10-2001::20");
    }

    /// pkg/provider's Test_discoverVIPs. Its "preferred IPv4 service IP" is
    /// what sharing finds: here the preferred address is the one whose
    /// Service's ports do not overlap.
    #[test]
    fn cloud_provider_families_and_policies() {
        use FamilyPolicy::*;
        const V4: Family = Family::V4;
        const V6: Family = Family::V6;
        let v4 = "10.10.10.8-10.10.10.15";
        let v6 = "fd00::1-fd00::10";
        let dual = "10.10.10.8-10.10.10.15,fd00::1-fd00::10";
        let small = "10.10.10.8-10.10.10.9,fd00::1-fd00::2";
        let used4: &[&str] = &["10.10.10.8", "10.10.10.9", "10.10.10.10", "10.10.10.12"];
        let used6: &[&str] = &["fd00::1", "fd00::2", "fd00::4"];
        let full4: &[&str] = &["10.10.10.8", "10.10.10.9"];
        let full6: &[&str] = &["fd00::1", "fd00::2"];
        let all: &[&str] = &["10.10.10.8", "10.10.10.9", "fd00::1", "fd00::2"];
        type Case<'a> = (
            Option<FamilyPolicy>,
            &'a [Family],
            &'a str,
            Option<&'a str>,
            &'a [&'a str],
            Result<&'a str, &'a str>,
        );
        let table: &[Case] = &[
            (None, &[], v4, None, used4, Ok("10.10.10.11")),
            (Some(SingleStack), &[V4], v4, None, used4, Ok("10.10.10.11")),
            (
                Some(SingleStack),
                &[V4],
                v4,
                Some("10.10.10.9"),
                used4,
                Ok("10.10.10.9"),
            ),
            (None, &[], v6, None, used6, Ok("fd00::3")),
            (Some(SingleStack), &[V6], v6, None, used6, Ok("fd00::3")),
            (
                Some(SingleStack),
                &[V4],
                v6,
                None,
                &[],
                Err("NoPoolForFamily"),
            ),
            (
                Some(SingleStack),
                &[V6],
                v4,
                None,
                &[],
                Err("NoPoolForFamily"),
            ),
            (
                Some(PreferDualStack),
                &[V4, V6],
                v4,
                None,
                used4,
                Ok("10.10.10.11"),
            ),
            (
                Some(PreferDualStack),
                &[V4, V6],
                v4,
                Some("10.10.10.10"),
                used4,
                Ok("10.10.10.10"),
            ),
            (
                Some(PreferDualStack),
                &[V4, V6],
                v6,
                None,
                used6,
                Ok("fd00::3"),
            ),
            (
                Some(PreferDualStack),
                &[],
                dual,
                None,
                &[],
                Ok("10.10.10.8,fd00::1"),
            ),
            (
                Some(PreferDualStack),
                &[V4, V6],
                dual,
                None,
                &[],
                Ok("10.10.10.8,fd00::1"),
            ),
            (
                Some(PreferDualStack),
                &[V6, V4],
                dual,
                None,
                &[],
                Ok("fd00::1,10.10.10.8"),
            ),
            (
                Some(PreferDualStack),
                &[V4, V6],
                dual,
                Some("10.10.10.8"),
                used4,
                Ok("10.10.10.8,fd00::1"),
            ),
            (
                Some(PreferDualStack),
                &[V6, V4],
                dual,
                Some("10.10.10.8"),
                used4,
                Ok("fd00::1,10.10.10.8"),
            ),
            (
                Some(PreferDualStack),
                &[V4, V6],
                small,
                None,
                full6,
                Ok("10.10.10.8"),
            ),
            (
                Some(PreferDualStack),
                &[V4, V6],
                small,
                None,
                full4,
                Ok("fd00::1"),
            ),
            (
                Some(PreferDualStack),
                &[V4, V6],
                small,
                None,
                all,
                Err("PoolExhausted"),
            ),
            (
                Some(PreferDualStack),
                &[V4, V6],
                "10.10.10.8-10.10.10.9,fd00::1-fd00::2,invalid-pool",
                None,
                &[],
                Err("BadPoolConfig"),
            ),
            (
                Some(RequireDualStack),
                &[V4, V6],
                v4,
                None,
                &[],
                Err("NoPoolForFamily"),
            ),
            (
                Some(RequireDualStack),
                &[V4, V6],
                v6,
                None,
                &[],
                Err("NoPoolForFamily"),
            ),
            (
                Some(RequireDualStack),
                &[V4, V6],
                "",
                None,
                &[],
                Err("BadPoolConfig"),
            ),
            (
                Some(RequireDualStack),
                &[V4, V6],
                dual,
                None,
                &[],
                Ok("10.10.10.8,fd00::1"),
            ),
            (
                Some(RequireDualStack),
                &[V6, V4],
                dual,
                None,
                &[],
                Ok("fd00::1,10.10.10.8"),
            ),
            (
                Some(RequireDualStack),
                &[V4, V6],
                small,
                None,
                full6,
                Err("PoolExhausted"),
            ),
            (
                Some(RequireDualStack),
                &[V4, V6],
                small,
                None,
                full4,
                Err("PoolExhausted"),
            ),
            (
                Some(RequireDualStack),
                &[V6, V4],
                small,
                None,
                full6,
                Err("PoolExhausted"),
            ),
            (
                Some(RequireDualStack),
                &[V4, V6],
                small,
                None,
                all,
                Err("PoolExhausted"),
            ),
        ];
        let namespace = "discover-vips-test-ns";
        for (policy, families, pool, preferred, used, want) in table {
            let mut pairs = vec![("range-global", *pool)];
            // The preferred address is the one Service whose port differs.
            let uses: Vec<AddressUse> = match preferred {
                None => taken(used),
                Some(preferred) => {
                    pairs.push(("allow-share-global", "true"));
                    used.iter()
                        .map(|a| {
                            let port = if a == preferred { 443 } else { 80 };
                            held(namespace, a, &[a], tcp(&[port]))
                        })
                        .collect()
                }
            };
            let got = allocate(
                &cm(&pairs),
                &request(namespace, *policy, families, tcp(&[80])),
                &uses,
            );
            let got = got
                .as_ref()
                .map(Allocation::annotation)
                .map_err(IpamError::reason);
            assert_eq!(
                got.as_deref().map_err(|e| *e),
                *want,
                "{policy:?} {families:?} {pool} {preferred:?} {used:?}"
            );
        }
    }

    /// pkg/provider's Test_syncLoadBalancer, the allocating cases.
    #[test]
    fn cloud_provider_sync_allocations() {
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            Option<FamilyPolicy>,
            &'a [Family],
            &'a str,
            Option<&'a str>,
        );
        let table: &[Case] = &[
            (
                &[("cidr-global", "192.168.1.1/24")],
                None,
                &[],
                "192.168.1.1",
                None,
            ),
            (
                &[("cidr-global", "fe80::10/126")],
                None,
                &[],
                "fe80::10",
                None,
            ),
            (
                &[("cidr-global", "10.120.120.1/24,fe80::10/126")],
                Some(FamilyPolicy::RequireDualStack),
                &[Family::V6, Family::V4],
                "fe80::10,10.120.120.1",
                None,
            ),
            (
                &[
                    ("cidr-global", "192.168.1.1/24"),
                    ("interface-global", "eth0"),
                ],
                None,
                &[],
                "192.168.1.1",
                Some("eth0"),
            ),
            (
                &[
                    ("cidr-global", "192.168.1.1/24"),
                    ("interface-test", "eth0"),
                ],
                None,
                &[],
                "192.168.1.1",
                Some("eth0"),
            ),
            (
                &[
                    ("cidr-global", "192.168.1.1/24"),
                    ("interface-what", "eth0"),
                ],
                None,
                &[],
                "192.168.1.1",
                None,
            ),
        ];
        for (pairs, policy, families, want, interface) in table {
            let got =
                allocate(&cm(pairs), &request("test", *policy, families, vec![]), &[]).unwrap();
            assert_eq!(got.annotation(), *want, "{pairs:?}");
            assert_eq!(got.interface.as_deref(), *interface, "{pairs:?}");
            assert_eq!(got.pool, "cidr-global");
        }
    }

    // The rules, one by one.

    #[test]
    fn lookup_takes_the_first_present_key() {
        let all = [
            ("cidr-team", "10.0.0.0/30"),
            ("cidr-global", "10.0.1.0/30"),
            ("range-team", "10.0.2.1-10.0.2.2"),
            ("range-global", "10.0.3.1-10.0.3.2"),
        ];
        for skip in 0..all.len() {
            let config = cm(&all[skip..]);
            assert_eq!(config.lookup("team").unwrap().key, all[skip].0);
        }
        // A global CIDR shadows a namespace range.
        let config = cm(&all[1..]);
        assert_eq!(config.lookup("team").unwrap().key, "cidr-global");
        assert_eq!(config.lookup("other").unwrap().key, "cidr-global");
        assert_eq!(
            cm(&[]).lookup("team"),
            Err(IpamError::NoPool {
                namespace: "team".into()
            })
        );
        assert_eq!(pool_keys("team")[2], "range-team");
    }

    #[test]
    fn a_bad_or_empty_namespace_key_blocks_that_namespace_only() {
        for bad in ["", "10.0.0.0/33", " 10.0.0.0/24"] {
            let config = cm(&[
                ("cidr-team", bad),
                ("cidr-global", "10.0.1.0/24"),
                ("cidr-other", "10.0.2.0/24"),
            ]);
            let err = config.lookup("team").unwrap_err();
            assert!(
                matches!(&err, IpamError::BadValue(p) if p.key == "cidr-team"),
                "{err:?}"
            );
            assert!(err.to_string().contains("cidr-team"), "{err}");
            assert_eq!(err.reason(), "BadPoolConfig");
            assert_eq!(config.lookup("other").unwrap().key, "cidr-other");
            assert_eq!(config.lookup("third").unwrap().key, "cidr-global");
            assert_eq!(config.problems.len(), 1, "{:?}", config.problems);
            let request = request("team", None, &[], vec![]);
            assert_eq!(allocate(&config, &request, &[]), Err(err));
        }
    }

    #[test]
    fn bad_values_name_the_key_and_the_text() {
        let table: &[(&str, &str, &str)] = &[
            ("10.0.0.0/24, 10.0.1.0/24", " 10.0.1.0/24", "white space"),
            ("10.0.0.0/24\n", "10.0.0.0/24\n", "white space"),
            ("10.0.0.0/24,", "", "comma"),
            ("10.0.0.0/024", "10.0.0.0/024", "prefix length"),
            ("10.0.0.0/33", "10.0.0.0/33", "prefix length"),
            ("fd00::/129", "fd00::/129", "prefix length"),
            ("10.0.0.0/", "10.0.0.0/", "prefix length"),
            ("10.0.0.0/+8", "10.0.0.0/+8", "prefix length"),
            ("010.0.0.0/8", "010.0.0.0/8", "not an IP address"),
            ("fe80::%eth0/64", "fe80::%eth0/64", "not an IP address"),
            (
                "10.0.0.0/24,10.0.1.1-10.0.1.5",
                "10.0.1.1-10.0.1.5",
                "not a CIDR",
            ),
            ("10.0.0.1", "10.0.0.1", "not a range"),
            (
                "10.0.0.1-10.0.0.2-10.0.0.3",
                "10.0.0.1-10.0.0.2-10.0.0.3",
                "not a range",
            ),
            (
                "10.0.0.9-10.0.0.1",
                "10.0.0.9-10.0.0.1",
                "starts after it ends",
            ),
            ("10.0.0.1-fd00::1", "10.0.0.1-fd00::1", "mixes"),
            (
                "fe80::1%eth0-fe80::2%eth0",
                "fe80::1%eth0-fe80::2%eth0",
                "not an IP address",
            ),
            ("invalid-pool", "invalid-pool", "not an IP address"),
        ];
        for (value, item, why) in table {
            let config = cm(&[("range-global", value), ("cidr-team", "10.9.0.0/30")]);
            let [problem] = config.problems.as_slice() else {
                panic!("{value:?}: {:?}", config.problems);
            };
            assert_eq!(problem.key, "range-global");
            assert_eq!(problem.value, *value);
            assert!(
                matches!(&problem.kind, ProblemKind::BadItem { item: i, .. } if i == item),
                "{value:?}: {problem:?}"
            );
            let text = problem.to_string();
            assert!(
                text.contains("range-global") && text.contains(why),
                "{text}"
            );
            assert!(config.lookup("other").is_err());
            assert_eq!(config.lookup("team").unwrap().key, "cidr-team");
        }
    }

    #[test]
    fn odd_but_working_values_are_reported_and_kept() {
        let config = cm(&[
            ("range-a", "10.0.0.0/30"),
            ("cidr-b", "10.0.0.1-10.0.0.2"),
            ("range-c", "fe80::1-fe80::2"),
            ("cidr-d", "::ffff:10.0.0.0/126"),
            ("cidr-e", "127.0.0.0/30"),
            ("cidr-f", "10.0.0.0/30,ff02::/127"),
        ]);
        let kinds: Vec<(&str, String)> = config
            .problems
            .iter()
            .map(|p| {
                let kind = match &p.kind {
                    ProblemKind::ReadAs { kind } => format!("read as {kind:?}"),
                    ProblemKind::Unusable { what, .. } => what.to_string(),
                    other => format!("{other:?}"),
                };
                (p.key.as_str(), kind)
            })
            .collect();
        // In key order, as the ConfigMap's data is read.
        let expected = [
            ("cidr-b", "read as Range"),
            ("cidr-d", "IPv4-mapped addresses"),
            ("cidr-e", "loopback addresses"),
            ("cidr-f", "multicast addresses"),
            ("range-a", "read as Cidr"),
            ("range-c", "link-local addresses"),
        ];
        assert_eq!(
            kinds,
            expected.map(|(k, w)| (k, w.to_string())),
            "{:?}",
            config.problems
        );
        // Every one of them still hands out addresses, as the cloud provider does.
        for namespace in ["a", "b", "c", "d", "e", "f"] {
            let got = allocate(&config, &request(namespace, None, &[], vec![]), &[]);
            assert!(got.is_ok(), "{namespace}: {got:?}");
        }
        assert_eq!(config.pools().count(), 6);
    }

    #[test]
    fn unknown_keys_and_impossible_namespaces_are_reported() {
        let config = cm(&[
            ("cidr_global", "10.0.0.0/24"),
            ("search-order-team", "desc"),
            ("kubevip-services", "{}"),
            ("cidr-", "10.0.0.0/24"),
            ("cidr-Team", "10.0.0.0/24"),
            ("range-global", "10.0.1.1-10.0.1.9"),
        ]);
        let kinds: Vec<(&str, &ProblemKind)> = config
            .problems
            .iter()
            .map(|p| (p.key.as_str(), &p.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("cidr-", &ProblemKind::NoSuchNamespace),
                ("cidr-Team", &ProblemKind::NoSuchNamespace),
                ("cidr_global", &ProblemKind::UnknownKey),
                ("kubevip-services", &ProblemKind::UnknownKey),
                ("search-order-team", &ProblemKind::UnknownKey),
            ]
        );
        assert_eq!(config.search_order, SearchOrder::Ascending);
        assert_eq!(config.lookup("team").unwrap().key, "range-global");
    }

    #[test]
    fn global_settings_read_exact_text() {
        for (value, desc, problem) in [
            ("desc", true, false),
            ("asc", false, false),
            ("", false, false),
            ("DESC", false, true),
            (" desc", false, true),
            ("descending", false, true),
        ] {
            let config = cm(&[(SEARCH_ORDER_KEY, value)]);
            assert_eq!(
                config.search_order == SearchOrder::Descending,
                desc,
                "{value:?}"
            );
            assert_eq!(!config.problems.is_empty(), problem, "{value:?}");
        }
        for (value, skip, problem) in [
            ("true", true, false),
            ("false", false, false),
            ("True", false, true),
            ("1", false, true),
            ("yes", false, true),
        ] {
            let config = cm(&[(SKIP_END_IPS_KEY, value)]);
            assert_eq!(config.skip_end_ips_in_cidr, skip, "{value:?}");
            assert_eq!(!config.problems.is_empty(), problem, "{value:?}");
            if problem {
                assert!(config.problems[0].to_string().contains(SKIP_END_IPS_KEY));
            }
        }
    }

    #[test]
    fn allow_share_reads_go_booleans_and_does_not_fall_back_from_a_bad_one() {
        for (value, shared) in [
            ("true", true),
            ("1", true),
            ("T", true),
            ("false", false),
            ("0", false),
        ] {
            assert_eq!(
                cm(&[("allow-share-team", value)]).allow_share("team"),
                shared,
                "{value}"
            );
        }
        let config = cm(&[("allow-share-team", "yes"), ("allow-share-global", "true")]);
        assert!(
            !config.allow_share("team"),
            "a bad namespace value is false"
        );
        assert!(config.allow_share("other"));
        assert_eq!(config.problems.len(), 1);
        assert_eq!(config.problems[0].kind, ProblemKind::NotABoolean);
        assert!(!cm(&[]).allow_share("team"));
        // allow-share is looked up on its own: a namespace value applies with a global pool.
        let config = cm(&[("allow-share-team", "true"), ("cidr-global", "10.0.0.0/24")]);
        assert!(config.allow_share("team") && !config.allow_share("other"));
    }

    #[test]
    fn interface_comes_from_the_namespace_then_global() {
        let config = cm(&[
            ("interface-global", "eth0"),
            ("interface-team", "eth1"),
            ("interface-quiet", ""),
            ("interface-spaced", " eth2 "),
            ("interface-bad", "eth0/1"),
        ]);
        assert_eq!(config.interface("team"), Ok(Some("eth1")));
        assert_eq!(config.interface("other"), Ok(Some("eth0")));
        assert_eq!(
            config.interface("quiet"),
            Ok(None),
            "empty does not fall back"
        );
        assert_eq!(
            config.interface("spaced"),
            Ok(Some(" eth2 ")),
            "written verbatim"
        );
        let err = config.interface("bad").unwrap_err();
        assert!(err.to_string().contains("interface-bad"), "{err}");
        let pools = cm(&[
            ("cidr-global", "10.0.0.0/24"),
            ("interface-bad", "a very long name"),
        ]);
        let got = allocate(&pools, &request("bad", None, &[], vec![]), &[]);
        assert!(matches!(got, Err(IpamError::BadValue(p)) if p.key == "interface-bad"));
        assert!(allocate(&pools, &request("good", None, &[], vec![]), &[]).is_ok());
    }

    #[test]
    fn skip_end_ips_applies_to_merged_ipv4_cidr_blocks_only() {
        // Two halves merge into one /24: only its two ends are dropped.
        assert_eq!(
            cm(&[("cidr-global", "10.0.0.0/25,10.0.0.128/25"), SKIP])
                .lookup("x")
                .unwrap()
                .offered(Family::V4),
            [AddressRange {
                first: ip("10.0.0.1"),
                last: ip("10.0.0.254")
            }]
        );
        // A union that is not one block is cut into its blocks, each loses its ends.
        let offered = |value: &str| {
            enumerate(
                &cm(&[("cidr-global", value), SKIP])
                    .lookup("x")
                    .unwrap()
                    .offered(Family::V4),
            )
        };
        assert_eq!(
            offered("10.0.0.4/30,10.0.0.8/30"),
            [
                ip("10.0.0.5"),
                ip("10.0.0.6"),
                ip("10.0.0.9"),
                ip("10.0.0.10")
            ]
        );
        assert_eq!(
            offered("10.0.0.4/31,10.0.0.6/32"),
            [ip("10.0.0.4"), ip("10.0.0.5"), ip("10.0.0.6")],
            "the blocks .4/31 and .6/32 are too small to lose their ends"
        );
        // Ranges keep their ends; IPv6 keeps everything.
        assert_eq!(
            handed_out("10.0.0.4-10.0.0.7", &[SKIP]),
            [
                ip("10.0.0.4"),
                ip("10.0.0.5"),
                ip("10.0.0.6"),
                ip("10.0.0.7")
            ]
        );
        assert_eq!(handed_out("fd00::/126", &[SKIP]).len(), 4);
        // The fence still admits the dropped ends.
        let config = cm(&[("cidr-global", "10.0.0.4/30"), SKIP]);
        assert!(config.admits("x", &ip("10.0.0.4")));
        assert!(!config.admits("x", &ip("10.0.0.8")));
    }

    #[test]
    fn ipv4_addresses_ending_in_0_or_255_are_never_handed_out() {
        assert_eq!(
            first("10.0.0.255-10.0.1.1", &[], &[]).as_deref(),
            Ok("10.0.1.1")
        );
        assert_eq!(
            first("10.0.0.0/23", &[DESC], &[]).as_deref(),
            Ok("10.0.1.254")
        );
        let upper: Vec<String> = (1..=254).map(|n| format!("10.0.1.{n}")).collect();
        let upper: Vec<&str> = upper.iter().map(String::as_str).collect();
        assert_eq!(
            first("10.0.0.0/23", &[DESC], &upper).as_deref(),
            Ok("10.0.0.254"),
            "the middle .0 and .255 of a /23 too"
        );
        assert!(matches!(
            first("10.0.0.255-10.0.1.0", &[], &[]),
            Err(IpamError::PoolExhausted { .. })
        ));
        // Not so in IPv6.
        assert_eq!(
            first("fd00::ff-fd00::100", &[], &[]).as_deref(),
            Ok("fd00::ff")
        );
        assert_eq!(first("fd00::/127", &[], &[]).as_deref(), Ok("fd00::"));
    }

    #[test]
    fn lists_are_sets_whatever_their_order() {
        assert_eq!(
            first("10.0.5.1-10.0.5.9,10.0.1.1-10.0.1.9", &[], &[]).as_deref(),
            Ok("10.0.1.1")
        );
        assert_eq!(
            first("10.0.5.1-10.0.5.9,10.0.1.1-10.0.1.9", &[DESC], &[]).as_deref(),
            Ok("10.0.5.9")
        );
    }

    #[test]
    fn every_namespace_counts_as_in_use() {
        // A namespace pool overlapping the global one: the cloud provider
        // counts only the namespace's own Services and would hand out
        // 10.0.0.1 twice; kvip counts everyone's.
        let config = cm(&[("cidr-team", "10.0.0.0/30"), ("cidr-global", "10.0.0.0/30")]);
        let used = vec![held("other", "web", &["10.0.0.1"], tcp(&[80]))];
        let got = allocate(&config, &request("team", None, &[], tcp(&[443])), &used).unwrap();
        assert_eq!(got.addresses, [ip("10.0.0.2")]);
        // The Service's own entry is not in its way.
        let own = vec![held("team", "new", &["10.0.0.1"], vec![])];
        let got = allocate(&config, &request("team", None, &[], vec![]), &own).unwrap();
        assert_eq!(got.addresses, [ip("10.0.0.1")]);
    }

    fn sharing(pairs: &[(&str, &str)]) -> PoolConfig {
        let mut all = vec![
            ("cidr-global", "10.0.0.0/29,fd00::/126"),
            ("allow-share-global", "true"),
        ];
        all.extend_from_slice(pairs);
        cm(&all)
    }

    #[test]
    fn sharing_takes_a_used_address_whose_ports_do_not_overlap() {
        let config = sharing(&[]);
        let used = vec![
            held("ns", "a", &["10.0.0.1"], tcp(&[80])),
            held("ns", "b", &["10.0.0.2"], tcp(&[443])),
            held("ns", "c", &["10.0.0.2"], tcp(&[8443])),
        ];
        // Overlapping 80 on .1, free on .2: .2 is shared, before any free address.
        let got = allocate(&config, &request("ns", None, &[], tcp(&[80, 53])), &used).unwrap();
        assert_eq!(got.addresses, [ip("10.0.0.2")]);
        assert_eq!(
            got.shared_with,
            [ServiceKey::new("ns", "b"), ServiceKey::new("ns", "c")]
        );
        // The lowest shareable first, the highest with desc.
        let got = allocate(&config, &request("ns", None, &[], tcp(&[22])), &used).unwrap();
        assert_eq!(got.addresses, [ip("10.0.0.1")]);
        let desc = sharing(&[DESC]);
        let got = allocate(&desc, &request("ns", None, &[], tcp(&[22])), &used).unwrap();
        assert_eq!(got.addresses, [ip("10.0.0.2")]);
        // Every port overlaps somewhere: a fresh address.
        let got = allocate(&config, &request("ns", None, &[], tcp(&[80, 443])), &used).unwrap();
        assert_eq!(got.addresses, [ip("10.0.0.3")]);
        assert!(got.shared_with.is_empty());
        // Sharing off: a fresh address.
        let off = cm(&[("cidr-global", "10.0.0.0/29")]);
        let got = allocate(&off, &request("ns", None, &[], tcp(&[22])), &used).unwrap();
        assert_eq!(got.addresses, [ip("10.0.0.3")]);
    }

    #[test]
    fn sharing_compares_port_numbers_not_protocols() {
        let config = sharing(&[]);
        let used = vec![held("ns", "dns", &["10.0.0.1"], vec![("UDP".into(), 53)])];
        let got = allocate(&config, &request("ns", None, &[], tcp(&[53])), &used).unwrap();
        assert_eq!(got.addresses, [ip("10.0.0.2")], "TCP 53 overlaps UDP 53");
    }

    #[test]
    fn sharing_rules_on_ports_namespaces_families_and_the_pool() {
        let config = sharing(&[]);
        let new = |ports| request("ns", Some(FamilyPolicy::PreferDualStack), &[], ports);
        // A Service without ports makes its address unshareable ...
        let portless = vec![held("ns", "a", &["10.0.0.1"], vec![])];
        assert_eq!(
            allocate(&config, &new(tcp(&[80])), &portless)
                .unwrap()
                .addresses[0],
            ip("10.0.0.2")
        );
        // ... but a newcomer without ports shares any shareable address.
        let ported = vec![held("ns", "a", &["10.0.0.1"], tcp(&[80]))];
        assert_eq!(
            allocate(&config, &new(vec![]), &ported).unwrap().addresses[0],
            ip("10.0.0.1")
        );
        // Another namespace's address is never shared, nor one that two namespaces hold.
        let foreign = vec![held("other", "a", &["10.0.0.1"], tcp(&[80]))];
        assert_eq!(
            allocate(&config, &new(tcp(&[22])), &foreign)
                .unwrap()
                .addresses[0],
            ip("10.0.0.2")
        );
        let mixed = vec![
            held("ns", "a", &["10.0.0.1"], tcp(&[80])),
            held("other", "b", &["10.0.0.1"], tcp(&[81])),
        ];
        assert_eq!(
            allocate(&config, &new(tcp(&[22])), &mixed)
                .unwrap()
                .addresses[0],
            ip("10.0.0.2")
        );
        // IPv6 is never shared; the IPv4 one is, in a dual-stack allocation.
        let dual = vec![held("ns", "a", &["10.0.0.1", "fd00::"], tcp(&[80]))];
        assert_eq!(
            allocate(&config, &new(tcp(&[22])), &dual)
                .unwrap()
                .addresses,
            [ip("10.0.0.1"), ip("fd00::1")]
        );
        // An address outside the pool, or one it skips, is never shared.
        let outside = vec![
            held("ns", "a", &["192.168.9.9"], tcp(&[80])),
            held("ns", "b", &["10.0.0.0"], tcp(&[80])),
        ];
        assert_eq!(
            allocate(&config, &new(tcp(&[22])), &outside)
                .unwrap()
                .addresses[0],
            ip("10.0.0.1")
        );
        // allow-share of the Service's namespace decides.
        let team_only = cm(&[("cidr-global", "10.0.0.0/29"), ("allow-share-ns", "true")]);
        let got = allocate(&team_only, &request("ns", None, &[], tcp(&[22])), &ported).unwrap();
        assert_eq!(got.addresses, [ip("10.0.0.1")]);
        let theirs = vec![held("other", "a", &["10.0.0.1"], tcp(&[80]))];
        let got = allocate(
            &team_only,
            &request("other", None, &[], tcp(&[22])),
            &theirs,
        )
        .unwrap();
        assert_eq!(got.addresses, [ip("10.0.0.2")]);
    }

    #[test]
    fn dual_stack_policies() {
        use FamilyPolicy::*;
        let config = cm(&[("cidr-global", "10.0.0.0/30,fd00::/127")]);
        let ask = |policy, families: &[Family], used: &[&str]| {
            allocate(
                &config,
                &request("ns", policy, families, vec![]),
                &taken(used),
            )
        };
        let v4 = [Family::V4];
        let v6 = [Family::V6];
        let both = [Family::V6, Family::V4];
        assert_eq!(
            ask(Some(SingleStack), &both, &[]).unwrap().annotation(),
            "fd00::"
        );
        assert_eq!(ask(None, &v4, &[]).unwrap().annotation(), "10.0.0.1");
        // PreferDualStack takes only the families the Service lists.
        assert_eq!(
            ask(Some(PreferDualStack), &v4, &[]).unwrap().annotation(),
            "10.0.0.1"
        );
        assert_eq!(
            ask(Some(PreferDualStack), &v6, &[]).unwrap().annotation(),
            "fd00::"
        );
        assert_eq!(
            ask(Some(PreferDualStack), &both, &[]).unwrap().annotation(),
            "fd00::,10.0.0.1"
        );
        let partial = ask(Some(PreferDualStack), &both, &["fd00::", "fd00::1"]).unwrap();
        assert_eq!(partial.annotation(), "10.0.0.1");
        assert_eq!(partial.exhausted, [Family::V6]);
        // An exhausted single-family pool is exhausted, not an empty success.
        let single = cm(&[("range-global", "10.0.0.1-10.0.0.2")]);
        let got = allocate(
            &single,
            &request(
                "ns",
                Some(PreferDualStack),
                &[Family::V4, Family::V6],
                vec![],
            ),
            &taken(&["10.0.0.1", "10.0.0.2"]),
        );
        assert_eq!(
            got,
            Err(IpamError::PoolExhausted {
                key: "range-global".into(),
                families: vec![Family::V4]
            })
        );
        // RequireDualStack names what is missing.
        let got = allocate(
            &single,
            &request(
                "ns",
                Some(RequireDualStack),
                &[Family::V4, Family::V6],
                vec![],
            ),
            &[],
        );
        assert_eq!(
            got,
            Err(IpamError::NoPoolForFamily {
                key: "range-global".into(),
                family: Family::V6
            })
        );
        let err = ask(
            Some(RequireDualStack),
            &both,
            &["10.0.0.1", "10.0.0.2", "10.0.0.3"],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "pool cidr-global has no free IPv4 address: every one is in use"
        );
        let err = ask(
            Some(PreferDualStack),
            &both,
            &["10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::", "fd00::1"],
        )
        .unwrap_err();
        assert_eq!(
            err,
            IpamError::PoolExhausted {
                key: "cidr-global".into(),
                families: vec![Family::V6, Family::V4]
            }
        );
        assert!(err.to_string().contains("IPv6 or IPv4"), "{err}");
        // A family the Service does not list and the pool does not have.
        let only4 = cm(&[("cidr-global", "10.0.0.0/30")]);
        let got = allocate(
            &only4,
            &request("ns", Some(PreferDualStack), &v6, vec![]),
            &[],
        );
        assert_eq!(got.unwrap_err().reason(), "NoPoolForFamily");
        assert_eq!(
            FamilyPolicy::from_kubernetes("PreferDualStack"),
            Some(PreferDualStack)
        );
        assert_eq!(FamilyPolicy::from_kubernetes("Dual"), None);
        assert_eq!(Family::from_kubernetes("IPv6"), Some(Family::V6));
        assert_eq!(Family::from_kubernetes("ipv6"), None);
    }

    #[test]
    fn the_dhcp_marker_is_refused_with_a_reason() {
        let whole = cm(&[("cidr-global", DHCP_MARKER)]);
        for families in [&[][..], &[Family::V4], &[Family::V6]] {
            let got = allocate(&whole, &request("ns", None, families, vec![]), &[]);
            assert_eq!(
                got,
                Err(IpamError::Dhcp {
                    key: "cidr-global".into()
                })
            );
        }
        let err = allocate(&whole, &request("ns", None, &[], vec![]), &[]).unwrap_err();
        assert_eq!(err.reason(), "DhcpNotSupported");
        assert!(err.to_string().contains("0.0.0.0/32") && err.to_string().contains("cidr-global"));
        assert!(whole.problems.is_empty());
        assert!(!whole.admits("ns", &ip("0.0.0.0")));
        // The IPv4 part of a list being the marker: IPv4 is refused, IPv6 served.
        let part = cm(&[("cidr-global", "0.0.0.0/32,fd00::/120")]);
        let ask = |policy, families: &[Family]| {
            allocate(&part, &request("ns", policy, families, vec![]), &[])
        };
        assert_eq!(ask(None, &[]).unwrap_err().reason(), "DhcpNotSupported");
        assert_eq!(ask(None, &[Family::V6]).unwrap().annotation(), "fd00::");
        assert_eq!(
            ask(Some(FamilyPolicy::PreferDualStack), &[])
                .unwrap_err()
                .reason(),
            "DhcpNotSupported"
        );
        // Not the marker: a range of 0.0.0.0, or the marker with white space.
        assert_eq!(
            first("0.0.0.0-0.0.0.0", &[], &[]).unwrap_err().reason(),
            "PoolExhausted"
        );
        assert_eq!(
            first(" 0.0.0.0/32", &[], &[]).unwrap_err().reason(),
            "BadPoolConfig"
        );
    }

    #[test]
    fn huge_ipv6_pools_cost_what_small_ones_cost() {
        let config = cm(&[("cidr-global", "fd00::/64,10.0.0.0/8")]);
        // Four thousand addresses in use from the bottom of the /64.
        let used: Vec<IpAddr> = (0..4000u128)
            .map(|n| Family::V6.to_addr((0xfd00u128 << 112) + n))
            .collect();
        let in_use = vec![AddressUse {
            service: ServiceKey::new("ns", "many"),
            addresses: used,
            ports: vec![],
        }];
        let ask = |config: &PoolConfig| {
            allocate(config, &request("ns", None, &[Family::V6], vec![]), &in_use)
                .unwrap()
                .annotation()
        };
        assert_eq!(ask(&config), "fd00::fa0");
        let desc = cm(&[("cidr-global", "fd00::/64"), DESC]);
        assert_eq!(ask(&desc), "fd00::ffff:ffff:ffff:ffff");
        let usage = pool_usage(&config, &in_use);
        assert_eq!(
            usage[0].families,
            [
                FamilyUsage {
                    family: Family::V4,
                    size: (1 << 24) - 2 * (1 << 16),
                    used: 0,
                    free: (1 << 24) - 2 * (1 << 16),
                },
                FamilyUsage {
                    family: Family::V6,
                    size: 1 << 64,
                    used: 4000,
                    free: (1 << 64) - 4000,
                },
            ]
        );
        // The whole address space saturates rather than overflowing.
        let everything = cm(&[("cidr-global", "::/0")]);
        let usage = pool_usage(&everything, &[]);
        assert_eq!(usage[0].families[0].size, u128::MAX);
        assert_eq!(
            allocate(&everything, &request("ns", None, &[], vec![]), &[])
                .unwrap()
                .annotation(),
            "::"
        );
        let top = cm(&[(
            "range-global",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        )]);
        let used = taken(&[
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ]);
        assert_eq!(
            allocate(&top, &request("ns", None, &[], vec![]), &used)
                .unwrap_err()
                .reason(),
            "PoolExhausted"
        );
    }

    #[test]
    fn usage_counts_what_may_be_handed_out() {
        let config = cm(&[
            ("cidr-a", "10.0.0.0/24"),
            ("cidr-b", "10.0.0.0/24"),
            ("range-c", "10.0.0.250-10.0.1.5,fd00::1-fd00::4"),
            ("cidr-d", DHCP_MARKER),
            ("cidr-e", "10.0.0.0/30"),
            ("cidr-bad", "nonsense/8"),
            SKIP,
        ]);
        let in_use = vec![
            held("x", "a", &["10.0.0.1", "fd00::1"], tcp(&[80])),
            held("x", "b", &["10.0.0.1"], tcp(&[81])),
            held(
                "x",
                "c",
                &["10.0.0.255", "10.0.0.0", "10.0.1.1", "192.168.0.1"],
                vec![],
            ),
        ];
        let usage = pool_usage(&config, &in_use);
        let keys: Vec<&str> = usage.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(keys, ["cidr-a", "cidr-b", "cidr-d", "cidr-e", "range-c"]);
        let v4 = |i: usize| usage[i].families[0];
        // A /24 less .0 and .255: 254; the shared .1 counts once.
        assert_eq!((v4(0).size, v4(0).used, v4(0).free), (254, 1, 253));
        assert_eq!(
            v4(1),
            v4(0),
            "a used address counts in every pool holding it"
        );
        assert_eq!(
            (v4(2).size, v4(2).used),
            (0, 0),
            "the DHCP marker offers nothing"
        );
        assert_eq!(
            (v4(3).size, v4(3).used, v4(3).free),
            (2, 1, 1),
            "skip-end: .1 and .2"
        );
        // 10.0.0.250-10.0.1.5 is 12 addresses less .255 and .0.
        assert_eq!((v4(4).size, v4(4).used, v4(4).free), (10, 1, 9));
        let v6 = usage[4].families[1];
        assert_eq!(
            (v6.family, v6.size, v6.used, v6.free),
            (Family::V6, 4, 1, 3)
        );
        assert_eq!(usage[0].families.len(), 1, "only the families a pool names");
    }

    #[test]
    fn the_fence_admits_the_pool_the_namespace_would_allocate_from() {
        let config = cm(&[
            ("cidr-team", "10.1.0.0/24"),
            ("range-team", "10.2.0.1-10.2.0.9"),
            ("range-global", "10.9.0.1-10.9.0.9,fd00::1-fd00::9"),
            ("cidr-broken", "10.3.0.0/33"),
        ]);
        assert!(
            config.admits("team", &ip("10.1.0.0")),
            "the whole CIDR, .0 included"
        );
        assert!(config.admits("team", &ip("10.1.0.255")));
        assert!(
            !config.admits("team", &ip("10.2.0.1")),
            "a later key is not looked at"
        );
        assert!(
            !config.admits("team", &ip("10.9.0.1")),
            "nor the global pool"
        );
        assert!(config.admits("other", &ip("10.9.0.5")));
        assert!(config.admits("other", &ip("fd00::9")));
        assert!(!config.admits("other", &ip("fd00::a")));
        assert!(
            !config.admits("other", &ip("10.1.0.1")),
            "not another namespace's pool"
        );
        assert!(
            !config.admits("broken", &ip("10.3.0.1")),
            "a bad pool admits nothing"
        );
        assert!(
            !cm(&[]).admits("team", &ip("10.1.0.1")),
            "no pool, no address"
        );
    }

    #[test]
    fn reasons_are_stable_names() {
        let key = || "cidr-global".to_string();
        let all = [
            (
                IpamError::NoPool {
                    namespace: "ns".into(),
                },
                "NoPool",
            ),
            (
                IpamError::BadValue(Problem {
                    key: key(),
                    value: String::new(),
                    kind: ProblemKind::EmptyPool,
                }),
                "BadPoolConfig",
            ),
            (
                IpamError::NoPoolForFamily {
                    key: key(),
                    family: Family::V6,
                },
                "NoPoolForFamily",
            ),
            (
                IpamError::PoolExhausted {
                    key: key(),
                    families: vec![Family::V4],
                },
                "PoolExhausted",
            ),
            (IpamError::Dhcp { key: key() }, "DhcpNotSupported"),
        ];
        for (err, reason) in all {
            assert_eq!(err.reason(), reason);
        }
        assert_eq!(
            cm(&[("cidr-team", "")]).problems[0].to_string(),
            "kubevip ConfigMap key cidr-team: \"\" is empty: the namespaces that find this key first get no address (the next key is not tried); give it addresses or remove it"
        );
    }

    // One Service after another: no address twice unless sharing allows it,
    // none outside the pool, and the first free one in the search order.

    fn arb_data() -> impl Strategy<Value = BTreeMap<String, String>> {
        let value = prop::sample::select(vec![
            "10.0.0.0/29",
            "10.0.0.252/30,fd00::/126",
            "10.0.0.250-10.0.1.2",
            "fd00::1-fd00::4",
            "10.0.0.4/30,10.0.0.8/30,fd00::8/127",
            "10.0.0.1-10.0.0.3,10.0.0.2-10.0.0.6,fd00::ff-fd00::101",
            "10.0.0.0/30",
            "10.0.0.255/32,10.0.1.0/31",
        ]);
        let keys = ["cidr-ns0", "range-ns1", "cidr-global", "range-global"];
        (
            prop::collection::vec(prop::option::of(value), 4),
            prop::option::of(prop::bool::ANY),
            prop::option::of(prop::bool::ANY),
            prop::bool::ANY,
            prop::bool::ANY,
        )
            .prop_map(move |(values, share0, share_global, desc, skip)| {
                let mut data = BTreeMap::new();
                for (key, value) in keys.iter().zip(values) {
                    if let Some(value) = value {
                        data.insert(key.to_string(), value.to_string());
                    }
                }
                if let Some(share) = share0 {
                    data.insert("allow-share-ns0".into(), share.to_string());
                }
                if let Some(share) = share_global {
                    data.insert("allow-share-global".into(), share.to_string());
                }
                if desc {
                    data.insert(SEARCH_ORDER_KEY.into(), "desc".into());
                }
                if skip {
                    data.insert(SKIP_END_IPS_KEY.into(), "true".into());
                }
                data
            })
    }

    fn arb_requests() -> impl Strategy<Value = Vec<Request>> {
        let policy = prop::sample::select(vec![
            None,
            Some(FamilyPolicy::SingleStack),
            Some(FamilyPolicy::PreferDualStack),
            Some(FamilyPolicy::RequireDualStack),
        ]);
        let families = prop::sample::select(vec![
            vec![],
            vec![Family::V4],
            vec![Family::V6],
            vec![Family::V4, Family::V6],
            vec![Family::V6, Family::V4],
        ]);
        let ports = prop::collection::btree_set(
            prop::sample::select(vec![("TCP", 80), ("UDP", 80), ("TCP", 443), ("TCP", 53)]),
            0..3,
        );
        prop::collection::vec((0..3usize, policy, families, ports), 0..40).prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (ns, policy, families, ports))| Request {
                    service: ServiceKey::new(format!("ns{ns}"), format!("svc{i}")),
                    policy,
                    families,
                    ports: ports.into_iter().map(|(p, n)| (p.to_string(), n)).collect(),
                })
                .collect()
        })
    }

    /// The first address the pool offers in `order` that is not used, by enumeration.
    fn brute_first(
        pool: &Pool,
        family: Family,
        order: SearchOrder,
        in_use: &[AddressUse],
    ) -> Option<IpAddr> {
        let used: BTreeSet<IpAddr> = in_use
            .iter()
            .flat_map(|u| u.addresses.iter().copied())
            .collect();
        let free: Vec<IpAddr> = enumerate(&pool.offered(family))
            .into_iter()
            .filter(|a| !is_skipped(family, number(a).1) && !used.contains(a))
            .collect();
        match order {
            SearchOrder::Ascending => free.first().copied(),
            SearchOrder::Descending => free.last().copied(),
        }
    }

    proptest! {
        #[test]
        fn services_one_after_another_never_collide(data in arb_data(), requests in arb_requests()) {
            let config = PoolConfig::from_data(&data);
            let mut in_use: Vec<AddressUse> = Vec::new();
            for request in requests {
                let namespace = request.service.namespace.clone();
                match allocate(&config, &request, &in_use) {
                    Ok(allocation) => {
                        let pool = config.lookup(&namespace).unwrap();
                        prop_assert_eq!(&allocation.pool, &pool.key);
                        prop_assert!(!allocation.addresses.is_empty());
                        let families: BTreeSet<Family> = allocation.addresses.iter().map(Family::of).collect();
                        prop_assert_eq!(families.len(), allocation.addresses.len());
                        let wanted: BTreeSet<u16> = request.ports.iter().map(|(_, p)| *p).collect();
                        for address in &allocation.addresses {
                            prop_assert!(config.admits(&namespace, address), "{} outside the pool", address);
                            let (family, n) = number(address);
                            prop_assert!(!is_skipped(family, n));
                            let holders: Vec<&AddressUse> =
                                in_use.iter().filter(|u| u.addresses.contains(address)).collect();
                            if holders.is_empty() {
                                prop_assert_eq!(
                                    Some(*address),
                                    brute_first(pool, family, config.search_order, &in_use),
                                    "not the first free address"
                                );
                            }
                            for holder in holders {
                                let theirs: BTreeSet<u16> = holder.ports.iter().map(|(_, p)| *p).collect();
                                prop_assert!(
                                    config.allow_share(&namespace)
                                        && address.is_ipv4()
                                        && holder.service.namespace == namespace
                                        && !holder.ports.is_empty()
                                        && theirs.is_disjoint(&wanted),
                                    "{} handed to {} and {}", address, request.service, holder.service
                                );
                            }
                        }
                        in_use.push(AddressUse {
                            service: request.service.clone(),
                            addresses: allocation.addresses,
                            ports: request.ports.clone(),
                        });
                    }
                    Err(IpamError::PoolExhausted { key, families }) => {
                        let pool = config.lookup(&namespace).unwrap();
                        prop_assert_eq!(&key, &pool.key);
                        for family in families {
                            prop_assert_eq!(brute_first(pool, family, config.search_order, &in_use), None);
                        }
                    }
                    Err(other) => {
                        let expected = matches!(
                            other,
                            IpamError::NoPool { .. } | IpamError::NoPoolForFamily { .. }
                        );
                        prop_assert!(expected, "{:?}", other);
                    }
                }
            }
        }
    }

    fn input(namespace: &str, name: &str, created: i64) -> ServiceInput {
        ServiceInput {
            key: ServiceKey::new(namespace, name),
            type_: "LoadBalancer".into(),
            ip_families: vec!["IPv4".into()],
            ports: tcp(&[80]),
            uid: format!("uid-{name}"),
            created,
            ..Default::default()
        }
    }

    fn annotated(mut input: ServiceInput, addresses: &str) -> ServiceInput {
        input.annotations.insert(
            crate::service::LOADBALANCER_IPS_ANNOTATION.into(),
            addresses.into(),
        );
        input
    }

    #[test]
    fn services_without_an_address_ask_oldest_first_and_every_load_balancer_counts() {
        let mut other_class = annotated(input("b", "theirs", 1), "10.0.0.9");
        other_class.load_balancer_class = Some("example.com/other".into());
        let mut cluster_ip = annotated(input("a", "was-lb", 1), "10.0.0.8");
        cluster_ip.type_ = "ClusterIP".into();
        let mut ignored = annotated(input("a", "someone-elses", 1), "10.0.0.6");
        ignored
            .annotations
            .insert(crate::service::IGNORE_ANNOTATION.into(), "true".into());
        // Refused for its annotation's second item: its first still counts.
        let refused = annotated(input("a", "refused", 1), "10.0.0.5,not-an-ip");
        let inputs = vec![
            input("a", "young", 20),
            input("a", "old", 10),
            annotated(input("a", "set", 5), "10.0.0.7"),
            other_class,
            cluster_ip,
            ignored,
            refused,
        ];
        let (requests, uses) = requests_and_uses(&inputs, &LbClassRule::default());
        let asking: Vec<&str> = requests
            .iter()
            .map(|(_, r)| r.service.name.as_str())
            .collect();
        assert_eq!(
            asking,
            ["old", "young"],
            "ours without an address, oldest first"
        );
        let used: Vec<(&str, Vec<IpAddr>)> = uses
            .iter()
            .map(|u| (u.service.name.as_str(), u.addresses.clone()))
            .collect();
        assert_eq!(
            used,
            [
                ("set", vec![ip("10.0.0.7")]),
                ("theirs", vec![ip("10.0.0.9")]),
                ("someone-elses", vec![ip("10.0.0.6")]),
                ("refused", vec![ip("10.0.0.5")]),
            ],
            "another class's, an ignored and a refused Service's addresses count; a ClusterIP Service's are free"
        );
    }

    #[test]
    fn a_burst_of_requests_never_gets_one_address_twice() {
        let config = cm(&[("cidr-global", "10.0.0.0/29")]);
        let requests: Vec<Request> = (0..8)
            .map(|i| Request {
                service: ServiceKey::new(["a", "b", "c"][i % 3], format!("s{i}")),
                policy: None,
                families: vec![Family::V4],
                ports: tcp(&[80]),
            })
            .collect();
        let outcome = allocate_all(&config, &requests, &taken(&["10.0.0.2"]));
        let given: Vec<IpAddr> = outcome
            .allocations
            .iter()
            .flat_map(|(_, a)| a.addresses.clone())
            .collect();
        // .0 is skipped, .2 is taken: .1 .3 .4 .5 .6 .7 for six Services.
        assert_eq!(
            given,
            [
                "10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7"
            ]
            .map(ip)
            .to_vec()
        );
        let exhausted: Vec<&str> = outcome
            .refused
            .iter()
            .map(|(k, e)| {
                assert_eq!(e.reason(), "PoolExhausted");
                assert_eq!(e.pool(), Some("cidr-global"));
                k.name.as_str()
            })
            .collect();
        assert_eq!(exhausted, ["s6", "s7"]);
    }

    #[test]
    fn a_clash_is_a_shared_address_the_pools_would_not_share() {
        let sharing = cm(&[("cidr-global", "10.0.0.0/24"), ("allow-share-a", "true")]);
        let plain = cm(&[("cidr-global", "10.0.0.0/24")]);
        let mine = held("a", "mine", &["10.0.0.5"], tcp(&[80]));
        let web = held("a", "web", &["10.0.0.5"], tcp(&[443]));
        let same_port = held("a", "same", &["10.0.0.5"], tcp(&[80]));
        let elsewhere = held("b", "other", &["10.0.0.5"], tcp(&[443]));
        let portless = held("a", "portless", &["10.0.0.5"], vec![]);
        let unrelated = held("a", "unrelated", &["10.0.0.6"], tcp(&[80]));
        assert_eq!(clash(&sharing, &mine, &[mine.clone(), web.clone()]), None);
        assert_eq!(
            clash(&sharing, &mine, std::slice::from_ref(&unrelated)),
            None
        );
        for (config, other) in [
            (&plain, &web),
            (&sharing, &same_port),
            (&sharing, &elsewhere),
            (&sharing, &portless),
        ] {
            let found = clash(config, &mine, std::slice::from_ref(other));
            assert_eq!(found, Some((ip("10.0.0.5"), &other.service)), "{other:?}");
        }
        let six = held("a", "six", &["fd00::5"], tcp(&[443]));
        let mine6 = held("a", "mine", &["fd00::5"], tcp(&[80]));
        assert!(
            clash(&sharing, &mine6, &[six]).is_some(),
            "IPv6 is never shared"
        );
    }
}
