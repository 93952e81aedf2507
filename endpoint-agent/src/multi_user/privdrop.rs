//! Starting a process as a local account: supplementary groups, gid and uid
//! set in the child before `exec` (only async-signal-safe syscalls after
//! `fork`; the group list is computed before), a clean environment, and a
//! check that root cannot be regained.

use std::ffi::CString;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

use super::mapping::Account;

/// The account's supplementary groups (`getgrouplist`), its primary gid first.
pub fn group_list(account: &Account) -> std::io::Result<Vec<libc::gid_t>> {
    let name = CString::new(account.name.as_str())
        .map_err(|_| std::io::Error::other("user name contains NUL"))?;
    let mut n: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let mut count = n;
        // SAFETY: groups has room for `count` entries; getgrouplist writes at most that.
        let rc = unsafe {
            libc::getgrouplist(
                name.as_ptr(),
                account.gid as _,
                groups.as_mut_ptr().cast(),
                &mut count,
            )
        };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            return Ok(groups);
        }
        if n > 65536 {
            return Err(std::io::Error::other("too many groups"));
        }
        n = count.max(n * 2);
    }
}

/// The names of the account's groups (unnamed gids as numbers).
pub fn group_names(account: &Account) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for gid in group_list(account)? {
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        // SAFETY: zeroed POD out-parameters; getgrgid_r writes into `group`
        // and `buf` (of the given length) and sets `result`.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc =
            unsafe { libc::getgrgid_r(gid, &mut group, buf.as_mut_ptr(), buf.len(), &mut result) };
        if rc == 0 && !result.is_null() && !group.gr_name.is_null() {
            // SAFETY: gr_name points into `buf`, NUL-terminated by getgrgid_r.
            let name = unsafe { std::ffi::CStr::from_ptr(group.gr_name) };
            names.push(name.to_string_lossy().into_owned());
        } else {
            names.push(gid.to_string());
        }
    }
    Ok(names)
}

/// The clean environment a user's process gets.
pub fn user_env(account: &Account) -> Vec<(String, String)> {
    vec![
        ("HOME".into(), account.home.display().to_string()),
        ("USER".into(), account.name.clone()),
        ("LOGNAME".into(), account.name.clone()),
        ("SHELL".into(), account.shell.display().to_string()),
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("LANG".into(), "C.UTF-8".into()),
    ]
}

/// Makes `command` run as `account`: clean environment, working directory
/// the account's home (or `/`), groups/gid/uid dropped before exec. Fails
/// for root. The child aborts (exec never happens) if any step fails or if
/// `setuid(0)` still succeeds afterwards.
pub fn run_as(command: &mut Command, account: &Account) -> std::io::Result<()> {
    if account.uid == 0 || account.gid == 0 {
        return Err(std::io::Error::other("refusing to run as root"));
    }
    let groups = group_list(account)?;
    if groups.contains(&0) {
        return Err(std::io::Error::other(format!(
            "account `{}` is in group 0",
            account.name
        )));
    }
    let uid = account.uid as libc::uid_t;
    let gid = account.gid as libc::gid_t;
    command.env_clear();
    for (k, v) in user_env(account) {
        command.env(k, v);
    }
    let dir = if account.home.is_dir() {
        account.home.clone()
    } else {
        "/".into()
    };
    command.current_dir(dir);
    // SAFETY: the closure only makes async-signal-safe syscalls on data
    // prepared before fork, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::setgroups(groups.len() as _, groups.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setresgid(gid, gid, gid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setresuid(uid, uid, uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setuid(0) == 0 || libc::geteuid() == 0 {
                // No allocation after fork: a plain errno.
                return Err(std::io::Error::from_raw_os_error(libc::EPERM));
            }
            Ok(())
        });
    }
    Ok(())
}

/// Whether this process is root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::multi_user::mapping::lookup_account;

    fn status_ids(text: &str, key: &str) -> Vec<u32> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or("")
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    }

    #[test]
    fn refuses_root() {
        let root = lookup_account("root").unwrap();
        assert!(run_as(&mut Command::new("true"), &root).is_err());
    }

    /// As root with `.ci/users.sh` run: the child's real, effective, saved
    /// and fs uids/gids are the user's, its groups are the user's own, and
    /// it cannot become root again.
    #[test]
    fn drops_all_privileges() {
        let Some(alice) = lookup_account("lattice-alice") else {
            eprintln!("skipped: no lattice-alice account (run .ci/users.sh)");
            return;
        };
        if !is_root() {
            eprintln!("skipped: not root");
            return;
        }
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            "cat /proc/self/status; echo ENV:$HOME:$USER:$SHELL; (su -c true root </dev/null >/dev/null 2>&1 || sudo -n true >/dev/null 2>&1) && echo REGAINED || echo NOROOT",
        ]);
        run_as(&mut cmd, &alice).unwrap();
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(status_ids(&text, "Uid:"), vec![alice.uid; 4]);
        assert_eq!(status_ids(&text, "Gid:"), vec![alice.gid; 4]);
        let mut groups = status_ids(&text, "Groups:");
        groups.sort_unstable();
        let mut expected: Vec<u32> = group_list(&alice).unwrap().into_iter().collect();
        expected.sort_unstable();
        expected.dedup();
        assert_eq!(groups, expected);
        assert!(!groups.contains(&0));
        assert!(text.contains(&format!(
            "ENV:{}:lattice-alice:{}",
            alice.home.display(),
            alice.shell.display()
        )));
        assert!(text.contains("NOROOT"), "{text}");
        assert!(text.contains("CapEff:\t0000000000000000"), "{text}");
    }
}
