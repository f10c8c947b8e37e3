//! Whether this user has been added to the group pinhole since logging in: the group database
//! lists them (the package's installer added them) but this session's processes do not carry
//! the group yet, which happens at the next login. The app then says to sign out and in again,
//! not to join the group. (Unix only: on Windows pinholed serves local interactive users.)

/// The group whose members may use pinholed.
const GROUP: &str = "pinhole";

/// True when the group database puts this user in the group but this process is not in it.
pub fn joined_since_login() -> bool {
    let id = |args: &[&str]| {
        std::process::Command::new("id")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let (Some(user), Some(now)) = (id(&["-un"]), id(&["-Gn"])) else {
        return false;
    };
    // `id -Gn NAME` reads the group database; without a name, the process's own groups.
    let Some(database) = id(&["-Gn", &user]) else {
        return false;
    };
    pending(&now, &database)
}

/// The group is in the database's list of this user's groups but not in the session's.
fn pending(session_groups: &str, database_groups: &str) -> bool {
    let has = |list: &str| list.split_whitespace().any(|g| g == GROUP);
    has(database_groups) && !has(session_groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_since_login_is_told_to_log_in_again_and_no_one_else() {
        assert!(pending("alice sudo", "alice sudo pinhole"));
        assert!(
            !pending("alice sudo pinhole", "alice sudo pinhole"),
            "already in effect"
        );
        assert!(!pending("alice sudo", "alice sudo"), "not a member at all");
        assert!(
            !pending("alice", "alice pinhole-admins"),
            "another group's name"
        );
    }
}
