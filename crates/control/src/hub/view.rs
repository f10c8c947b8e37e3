//! An account's policy applied to the nodes in the hub: who sees whom, and each node's share
//! (filter and reach), by node id; rebuilt when the policy or a node's identity (addresses,
//! user, tags) changes.

use pinhole_policy::{Member, Policy, View};
use pinhole_proto::control::Node;
use pinhole_proto::filter::NodePolicy;
use std::collections::HashMap;

pub struct PolicyView {
    index: HashMap<String, usize>,
    view: View,
    shares: Vec<NodePolicy>,
}

impl PolicyView {
    pub fn new<'a>(policy: &Policy, nodes: impl Iterator<Item = &'a Node>) -> PolicyView {
        let members: Vec<Member> = nodes.map(member_of).collect();
        let index = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        let view = policy.view(members);
        let shares = (0..view.members().len())
            .map(|i| view.node_policy(i))
            .collect();
        PolicyView {
            index,
            view,
            shares,
        }
    }

    /// Whether `viewer` may see node `node` in its map.
    pub fn sees(&self, viewer: &str, node: &str) -> bool {
        match (self.index.get(viewer), self.index.get(node)) {
            (Some(&a), Some(&b)) => self.view.sees(a, b),
            _ => false,
        }
    }

    /// A node's filter and reach.
    pub fn share(&self, node: &str) -> Option<&NodePolicy> {
        self.index.get(node).and_then(|&i| self.shares.get(i))
    }
}

/// Whether `viewer` sees `node` under `view` (no view: no policy, everyone sees everyone).
pub fn sees(view: Option<&PolicyView>, viewer: &str, node: &str) -> bool {
    view.is_none_or(|v| v.sees(viewer, node))
}

/// A node as the policy sees it.
pub fn member_of(n: &Node) -> Member {
    Member {
        id: n.id.clone(),
        addresses: n.addresses.clone(),
        user: n.user.clone(),
        tags: n.tags.clone(),
        routes: n.routes.clone(),
    }
}

/// Whether two records of a node are the same to the policy.
pub fn same_identity(a: &Node, b: &Node) -> bool {
    a.addresses == b.addresses && a.user == b.user && a.tags == b.tags && a.routes == b.routes
}
