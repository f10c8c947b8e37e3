//! Policies as people write them: Headscale's documented sample, the rules a team starts with,
//! and the mistakes `policy set` must refuse with a line and column.

use pinhole_policy::{load, Member, Policy};
use pinhole_proto::filter::{describe, proto, PortRange};

fn member(id: &str, v4: &str, user: Option<&str>, tags: &[&str]) -> Member {
    Member {
        id: id.into(),
        addresses: vec![v4.parse().unwrap()],
        user: user.map(str::to_string),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        routes: Vec::new(),
    }
}

/// Whether `filter` lets a packet from `src` to `port` over `p` in (the engine's rule).
fn lets_in(p: &pinhole_proto::filter::NodePolicy, src: &str, port: u16, pr: u8) -> bool {
    let src: std::net::IpAddr = src.parse().unwrap();
    p.filter.iter().any(|r| {
        r.src.iter().any(|n| n.contains(&src))
            && (if r.protos.is_empty() {
                proto::DEFAULT.contains(&pr)
            } else {
                r.protos.contains(&pr)
            })
            && (!matches!(pr, proto::TCP | proto::UDP) || r.ports.iter().any(|x| x.contains(port)))
    })
}

#[test]
fn headscales_documented_sample_reads_unchanged_and_means_what_it_says() {
    let text = include_str!("fixtures/headscale-acls.hujson");
    let p = load(text).expect("the sample is a valid policy");
    assert_eq!(p.groups.len(), 4);
    assert_eq!(p.tag_owners.len(), 5);
    assert_eq!(p.hosts.len(), 2);
    assert_eq!(p.acls.as_ref().unwrap().len(), 13);
    assert!(p.owns_tag("dev1", "tag:dev-databases"));
    assert!(!p.owns_tag("intern1", "tag:dev-databases"));
    assert!(p.owns_tag("admin1", "tag:prod-databases"));

    let view = p.view(vec![
        member("boss-laptop", "100.64.0.1", Some("boss"), &[]),
        member("dev1-laptop", "100.64.0.2", Some("dev1"), &[]),
        member("intern-laptop", "100.64.0.3", Some("intern1"), &[]),
        member(
            "db-prod",
            "100.64.0.4",
            Some("admin1"),
            &["tag:prod-databases"],
        ),
        member(
            "app-dev",
            "100.64.0.5",
            Some("dev1"),
            &["tag:dev-app-servers"],
        ),
        member("admin-laptop", "100.64.0.6", Some("admin1"), &[]),
    ]);
    // The intern sees the dev app server only, and may reach it on 80 and 443.
    let intern = view.node_policy(2);
    assert_eq!(view.visible(2).iter().collect::<Vec<_>>(), vec![4]);
    assert_eq!(intern.reach.len(), 1);
    assert_eq!(
        describe(&intern.reach[0].allow),
        "ports 80 and 443 and ping"
    );
    // The production database lets in the boss on any port, admins on 22 and ping, and
    // nobody else; it sees neither the intern nor the developer.
    let db = view.node_policy(3);
    assert!(lets_in(&db, "100.64.0.1", 5432, proto::TCP));
    assert!(lets_in(&db, "100.64.0.6", 22, proto::TCP));
    assert!(lets_in(&db, "100.64.0.6", 0, proto::ICMP));
    assert!(!lets_in(&db, "100.64.0.6", 5432, proto::TCP));
    assert!(!lets_in(&db, "100.64.0.2", 5432, proto::TCP));
    assert!(!view.sees(3, 2) && !view.sees(3, 1));
    // The tagged app server belongs to its tag: dev1's own-devices rule does not cover it.
    let app = view.node_policy(4);
    assert!(lets_in(&app, "100.64.0.3", 443, proto::TCP));
    assert!(!lets_in(&app, "100.64.0.3", 22, proto::TCP));
    assert!(lets_in(&app, "100.64.0.2", 22, proto::TCP));
}

const TEAM: &str = r#"{
  "groups": { "group:dev": ["alice", "bob@"] },
  "tagOwners": { "tag:server": ["group:dev"] },
  "acls": [
    { "action": "accept", "src": ["group:dev"], "dst": ["tag:server:22,443"] },
  ],
  "tests": [
    { "src": "alice", "accept": ["tag:server:22", "tag:server:443"], "deny": ["tag:server:5432"] },
  ],
}"#;

#[test]
fn a_team_policy_shapes_maps_and_filters() {
    let p = load(TEAM).unwrap();
    let view = p.view(vec![
        member("alice", "100.64.0.1", Some("alice"), &[]),
        member("server", "100.64.0.2", Some("alice"), &["tag:server"]),
        member("carol", "100.64.0.3", Some("carol"), &[]),
        member("bob", "100.64.0.4", Some("bob"), &[]),
    ]);
    assert!(view.sees(0, 1) && view.sees(1, 0));
    // Carol is in no group: the server is out of her map and she out of its.
    assert!(!view.sees(2, 1) && !view.sees(1, 2) && !view.sees(2, 0));
    // alice and bob reach the server, not each other.
    assert!(!view.sees(0, 3));
    let server = view.node_policy(1);
    assert!(lets_in(&server, "100.64.0.1", 22, proto::TCP));
    assert!(lets_in(&server, "100.64.0.4", 443, proto::UDP));
    assert!(!lets_in(&server, "100.64.0.1", 5432, proto::TCP));
    assert!(!lets_in(&server, "100.64.0.3", 22, proto::TCP));
    // The server reaches nobody: nothing lets its packets into alice.
    let alice = view.node_policy(0);
    assert!(alice.filter.is_empty());
    assert_eq!(describe(&alice.reach[0].allow), "ports 22 and 443 and ping");
}

#[test]
fn no_acls_means_everyone_reaches_everyone() {
    let p = load(r#"{ "groups": { "group:x": ["a"] } }"#).unwrap();
    let view = p.view(vec![
        member("a", "100.64.0.1", Some("a"), &[]),
        member("b", "100.64.0.2", None, &["tag:zzz"]),
    ]);
    assert!(view.sees(0, 1));
    assert!(lets_in(
        &view.node_policy(1),
        "100.64.0.1",
        5432,
        proto::TCP
    ));
    // An empty list denies everything.
    let none = load(r#"{ "acls": [] }"#).unwrap();
    let view = none.view(vec![
        member("a", "100.64.0.1", Some("a"), &[]),
        member("b", "100.64.0.2", Some("b"), &[]),
    ]);
    assert!(!view.sees(0, 1));
    assert!(view.node_policy(1).filter.is_empty());
}

#[test]
fn own_devices_reach_each_other_only() {
    let p = load(
        r#"{ "acls": [ { "action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"] } ] }"#,
    )
    .unwrap();
    let view = p.view(vec![
        member("a1", "100.64.0.1", Some("ann"), &[]),
        member("a2", "100.64.0.2", Some("ann"), &[]),
        member("b1", "100.64.0.3", Some("ben"), &[]),
    ]);
    assert!(view.sees(0, 1) && !view.sees(0, 2) && !view.sees(2, 1));
    let a2 = view.node_policy(1);
    assert!(lets_in(&a2, "100.64.0.1", 22, proto::TCP));
    assert!(!lets_in(&a2, "100.64.0.3", 22, proto::TCP));
}

#[test]
fn mistakes_are_refused_with_line_column_and_reason() {
    let cases: [(&str, u32, u32, &str); 7] = [
        ("{\n  \"acls\": [\n    { \"action\": \"accept\", \"src\": [\"group:ops\"], \"dst\": [\"*:*\"] }\n  ]\n}", 3, 35, "unknown group \"group:ops\""),
        ("{\n  \"acls\": [{ \"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"tag:db:22\"] }]\n}", 2, 56, "unknown tag"),
        ("{ \"acls\": [ { \"action\": \"drop\", \"src\": [], \"dst\": [] } ] }", 1, 25, "the only action"),
        ("{ \"acl\": [] }", 1, 3, "unknown section \"acl\""),
        ("{ \"acls\": [ { \"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:99999\"] } ] }", 1, 57, "not a port"),
        ("{\n\"acls\": [\n  { \"action\": \"accept\" \"src\": [] }\n]}", 3, 24, "expected ','"),
        (TEAM_WRONG_TEST, 5, 60, "test failed: it says deny from alice to tag:server:443"),
    ];
    for (text, line, col, why) in cases {
        let e = load(text).expect_err(text);
        assert!(e.reason.contains(why), "{text}: {e}");
        assert_eq!((e.pos.line, e.pos.col), (line, col), "{text}: {e}");
    }
}

const TEAM_WRONG_TEST: &str = r#"{
  "groups": { "group:dev": ["alice"] },
  "tagOwners": { "tag:server": ["group:dev"] },
  "acls": [ { "action": "accept", "src": ["group:dev"], "dst": ["tag:server:22,443"] } ],
  "tests": [ { "src": "alice", "deny": ["tag:server:5432", "tag:server:443"] } ],
}"#;

#[test]
fn a_thousand_rules_apply_to_a_hundred_nodes_quickly() {
    let mut text = String::from("{ \"acls\": [\n");
    for i in 0..1000 {
        text.push_str(&format!(
            "{{ \"action\": \"accept\", \"src\": [\"u{}\"], \"dst\": [\"u{}:{}\"] }},\n",
            i % 100,
            (i * 7) % 100,
            1000 + i
        ));
    }
    text.push_str("] }");
    let p: Policy = load(&text).unwrap();
    let members: Vec<Member> = (0..100)
        .map(|i| {
            member(
                &format!("n{i}"),
                &format!("100.64.1.{i}"),
                Some(&format!("u{i}")),
                &[],
            )
        })
        .collect();
    let t = std::time::Instant::now();
    let view = p.view(members);
    let rules: usize = (0..100).map(|i| view.node_policy(i).filter.len()).sum();
    assert_eq!(rules, 1000);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        t.elapsed()
    );
    assert!(view.node_policy(0).filter[0].ports == vec![PortRange::one(1000)]);
}

#[test]
fn auto_approvers_approve_routes_inside_their_prefixes_for_the_nodes_they_name() {
    let p = Policy::parse(
        r#"{ "groups": { "group:net": ["alice"] }, "tagOwners": { "tag:router": ["alice"] },
             "autoApprovers": { "routes": { "10.0.0.0/8": ["group:net", "tag:router"] },
                                "exitNode": ["tag:router"] },
             "acls": [] }"#,
    )
    .unwrap();
    let nets = |v: &[&str]| -> Vec<ipnet::IpNet> { v.iter().map(|s| s.parse().unwrap()).collect() };
    let offered = nets(&["10.1.0.0/16", "192.168.0.0/24", "0.0.0.0/0", "::/0"]);
    let tag = vec!["tag:router".to_string()];
    assert_eq!(
        p.auto_approved(None, &tag, &offered),
        nets(&["10.1.0.0/16", "0.0.0.0/0", "::/0"])
    );
    assert_eq!(
        p.auto_approved(Some("alice"), &[], &offered),
        nets(&["10.1.0.0/16"]),
        "group:net, no exit node"
    );
    assert!(p.auto_approved(Some("bob"), &[], &offered).is_empty());
    // A wider offer than the approved prefix is not inside it.
    assert!(p
        .auto_approved(None, &tag, &nets(&["10.0.0.0/7"]))
        .is_empty());
}

/// A rule's destination CIDR reaches the network behind a subnet router (and `*` everything
/// an exit node forwards); a rule naming only nodes opens nothing behind them.
#[test]
fn rules_with_cidr_destinations_open_the_networks_routers_forward() {
    let p: Policy = load(
        r#"{
          "acls": [
            { "action": "accept", "src": ["alice"], "dst": ["192.168.7.0/25:80"] },
            { "action": "accept", "src": ["bob"], "dst": ["tag:router:22"] },
          ],
          "tagOwners": { "tag:router": ["alice"] },
        }"#,
    )
    .unwrap();
    let mut router = member("r", "100.64.0.9", None, &["tag:router"]);
    router.routes = vec!["192.168.7.0/24".parse().unwrap()];
    let members = vec![
        member("a", "100.64.0.1", Some("alice"), &[]),
        member("b", "100.64.0.2", Some("bob"), &[]),
        router,
    ];
    let view = p.view(members);
    // alice sees the router (her rule's CIDR is behind it); bob through his tag rule.
    assert!(view.sees(0, 2) && view.sees(1, 2));
    let share = view.node_policy(2);
    let routed: Vec<_> = share
        .filter
        .iter()
        .filter(|r| r.dst.iter().any(|d| d.to_string() == "192.168.7.0/25"))
        .collect();
    assert_eq!(routed.len(), 1, "{:?}", share.filter);
    assert_eq!(routed[0].ports, vec![PortRange::one(80)]);
    assert!(routed[0]
        .src
        .iter()
        .any(|s| s.to_string() == "100.64.0.1/32"));
    assert!(!routed[0]
        .src
        .iter()
        .any(|s| s.to_string() == "100.64.0.2/32"));
    // bob's rule opens port 22 on the router itself, nothing of its LAN.
    assert!(share
        .filter
        .iter()
        .filter(|r| r.src.iter().any(|s| s.to_string() == "100.64.0.2/32"))
        .all(|r| r
            .dst
            .iter()
            .all(|d| d.to_string().starts_with("100.64.0.9"))));
}
