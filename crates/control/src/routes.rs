//! Routes on control: which networks a node offers to forward (checked: canonical, not the
//! overlay's own ranges, an exit node offers both default routes), which of them are approved
//! (by the operator's `route approve`, or by the policy's `autoApprovers` when offered), and the
//! routes peers are told about: offered and approved. The operator's `route list|approve|revoke`.

use crate::admin::AdminError;
use crate::clock::now_ms;
use crate::store::{NodeRow, Store, StoreError};
use ipnet::IpNet;
use std::fmt::Write as _;
use std::net::Ipv6Addr;

/// Most routes one node may offer.
pub const MAX_ROUTES: usize = 64;

/// Routes as stored: comma-separated CIDRs (unreadable entries are skipped).
pub fn parse(text: &str) -> Vec<IpNet> {
    text.split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

pub fn format(routes: &[IpNet]) -> String {
    routes
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The routes a node forwards for its peers: offered by it and approved.
pub fn served(row: &NodeRow) -> Vec<IpNet> {
    let approved = parse(&row.approved_routes);
    parse(&row.advertised_routes)
        .into_iter()
        .filter(|r| approved.contains(r))
        .collect()
}

fn is_default(r: &IpNet) -> bool {
    r.prefix_len() == 0
}

/// Checks the routes a node offers; sorted and without repeats, or why not in words.
pub fn check_offered(routes: &[IpNet], ula: Ipv6Addr) -> Result<Vec<IpNet>, String> {
    if routes.len() > MAX_ROUTES {
        return Err(format!("a node may offer at most {MAX_ROUTES} routes"));
    }
    let overlay_v4: IpNet = "100.64.0.0/10".parse().map_err(|_| "overlay range")?;
    let overlay_v6 = ipnet::Ipv6Net::new(ula, 48)
        .map(|n| IpNet::V6(n.trunc()))
        .map_err(|e| e.to_string())?;
    let unroutable: Vec<IpNet> = [
        "127.0.0.0/8",
        "224.0.0.0/4",
        "::1/128",
        "fe80::/10",
        "ff00::/8",
    ]
    .iter()
    .filter_map(|s| s.parse().ok())
    .collect();
    let overlaps = |a: &IpNet, b: &IpNet| a.contains(b) || b.contains(a);
    for r in routes {
        if *r != r.trunc() {
            return Err(format!(
                "{r} has host bits set: the network is {}",
                r.trunc()
            ));
        }
        if is_default(r) {
            continue;
        }
        if overlaps(r, &overlay_v4) || overlaps(r, &overlay_v6) {
            return Err(format!(
                "{r} overlaps the mesh's own addresses ({overlay_v4}, {overlay_v6}): it cannot be routed through a node"
            ));
        }
        if let Some(u) = unroutable.iter().find(|u| overlaps(r, u)) {
            return Err(format!("{r} overlaps {u}, which is never routed"));
        }
    }
    let v4 = routes.iter().any(|r| is_default(r) && r.addr().is_ipv4());
    let v6 = routes.iter().any(|r| is_default(r) && r.addr().is_ipv6());
    if v4 != v6 {
        return Err(
            "an exit node offers both 0.0.0.0/0 and ::/0 (pinhole up --advertise-exit-node)".into(),
        );
    }
    let mut out = routes.to_vec();
    out.sort();
    out.dedup();
    Ok(out)
}

impl Store {
    /// Records the routes a node offers (its caller publishes the node).
    pub async fn set_advertised_routes(
        &self,
        id: &str,
        routes: &[IpNet],
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET advertised_routes = $1 WHERE id = $2")
            .bind(format(routes))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a node's approved routes; with `changed_at`, marks it changed (a running server
    /// publishes it: the operator's commands), else its caller publishes it.
    pub async fn set_approved_routes(
        &self,
        id: &str,
        routes: &[IpNet],
        changed_at: Option<i64>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE nodes SET approved_routes = $1, changed_at = COALESCE($2, changed_at) WHERE id = $3",
        )
            .bind(format(routes))
            .bind(changed_at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// `route list`: each node that offers or has routes: offered, approved, served.
pub async fn list(store: &Store, json: bool) -> Result<String, AdminError> {
    let rows = store.all_nodes(now_ms()).await?;
    let rows: Vec<&NodeRow> = rows
        .iter()
        .filter(|r| !r.advertised_routes.is_empty() || !r.approved_routes.is_empty())
        .collect();
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "node": r.name,
                    "id": r.id,
                    "account": r.account_name,
                    "advertised": parse(&r.advertised_routes),
                    "approved": parse(&r.approved_routes),
                    "served": served(r),
                })
            })
            .collect();
        return serde_json::to_string_pretty(&v)
            .map_err(|e| AdminError::Invalid(format!("cannot write JSON: {e}")));
    }
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("no node offers routes\n");
    }
    for r in rows {
        let approved = parse(&r.approved_routes);
        let _ = writeln!(out, "{} ({}):", r.name, r.account_name);
        for route in parse(&r.advertised_routes) {
            let state = if approved.contains(&route) {
                "approved"
            } else {
                "waiting for approval"
            };
            let _ = writeln!(out, "  {route:<24} {state}");
        }
    }
    Ok(out)
}

/// Which routes an operator names: `all` (every offered route), `exit` (both default routes), or
/// CIDRs.
fn named(which: &[String], offered: &[IpNet]) -> Result<Vec<IpNet>, AdminError> {
    let mut out = Vec::new();
    for w in which {
        match w.as_str() {
            "all" => out.extend_from_slice(offered),
            "exit" => out.extend(
                ["0.0.0.0/0", "::/0"]
                    .iter()
                    .filter_map(|s| s.parse::<IpNet>().ok()),
            ),
            s => out.push(s.parse::<IpNet>().map_err(|_| {
                AdminError::Invalid(format!("{s:?} is not a CIDR (or all, or exit)"))
            })?),
        }
    }
    Ok(out)
}

/// `route approve NODE ROUTE…`: approves routes (also ahead of their offer).
pub async fn approve(store: &Store, node: &str, which: &[String]) -> Result<String, AdminError> {
    let row = crate::admin::one_node(store, node).await?;
    let offered = parse(&row.advertised_routes);
    let mut approved = parse(&row.approved_routes);
    let add = named(which, &offered)?;
    for r in &add {
        if *r != r.trunc() {
            return Err(AdminError::Invalid(format!(
                "{r} has host bits set: the network is {}",
                r.trunc()
            )));
        }
    }
    approved.extend(add.iter().copied());
    approved.sort();
    approved.dedup();
    store
        .set_approved_routes(&row.id, &approved, Some(now_ms()))
        .await?;
    let waiting: Vec<String> = add
        .iter()
        .filter(|r| !offered.contains(r))
        .map(|r| r.to_string())
        .collect();
    let mut msg = format!("{}: approved {}", row.name, format(&add).replace(',', ", "));
    if !waiting.is_empty() {
        let _ = write!(msg, " ({} not offered by it yet)", waiting.join(", "));
    }
    Ok(msg)
}

/// `route revoke NODE ROUTE…`: takes approvals back; peers stop using those routes.
pub async fn revoke(store: &Store, node: &str, which: &[String]) -> Result<String, AdminError> {
    let row = crate::admin::one_node(store, node).await?;
    let approved = parse(&row.approved_routes);
    let gone = named(which, &approved)?;
    let keep: Vec<IpNet> = approved
        .iter()
        .filter(|r| !gone.contains(r))
        .copied()
        .collect();
    store
        .set_approved_routes(&row.id, &keep, Some(now_ms()))
        .await?;
    Ok(format!(
        "{}: revoked {}",
        row.name,
        format(&gone).replace(',', ", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|x| x.parse().unwrap()).collect()
    }

    #[test]
    fn offered_routes_are_checked_in_words() {
        let ula: Ipv6Addr = "fd7a:115c:a1e0::".parse().unwrap();
        let ok = check_offered(
            &nets(&["192.168.1.0/24", "10.0.0.0/8", "192.168.1.0/24"]),
            ula,
        )
        .unwrap();
        assert_eq!(ok, nets(&["10.0.0.0/8", "192.168.1.0/24"]));
        assert!(check_offered(&nets(&["0.0.0.0/0", "::/0"]), ula).is_ok());
        let e = check_offered(&nets(&["0.0.0.0/0"]), ula).unwrap_err();
        assert!(e.contains("both 0.0.0.0/0 and ::/0"), "{e}");
        let e = check_offered(&nets(&["192.168.1.5/24"]), ula).unwrap_err();
        assert!(e.contains("the network is 192.168.1.0/24"), "{e}");
        let e = check_offered(&nets(&["100.64.0.0/16"]), ula).unwrap_err();
        assert!(e.contains("mesh's own addresses"), "{e}");
        let e = check_offered(&nets(&["fd7a:115c:a1e0:1::/64"]), ula).unwrap_err();
        assert!(e.contains("mesh's own addresses"), "{e}");
        let e = check_offered(&nets(&["127.0.0.0/16"]), ula).unwrap_err();
        assert!(e.contains("never routed"), "{e}");
        let many: Vec<IpNet> = (0..65u8)
            .map(|i| format!("10.{i}.0.0/16").parse().unwrap())
            .collect();
        assert!(check_offered(&many, ula).is_err());
    }

    #[test]
    fn operators_name_routes_by_cidr_all_or_exit() {
        let offered = nets(&["192.168.1.0/24", "0.0.0.0/0", "::/0"]);
        assert_eq!(named(&["all".into()], &offered).unwrap(), offered);
        assert_eq!(
            named(&["exit".into()], &offered).unwrap(),
            nets(&["0.0.0.0/0", "::/0"])
        );
        assert!(named(&["nonsense".into()], &offered).is_err());
    }
}
