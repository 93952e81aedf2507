//! Identity -> local account mapping: ordered, anchored regex rules or an
//! external mapper program, then validation of the result (name syntax,
//! account exists, uid at least the minimum, never root).

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Who submitted a task, as the service knows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub identity_id: String,
    pub username: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub identity_provider: Option<String>,
}

/// Which field of the identity a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Username,
    Email,
    IdentityProvider,
}

/// One `[[multi_user.rules]]` entry, as written by the admin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub field: Field,
    /// Matched against the WHOLE field (wrapped as `^(?:...)$`).
    #[serde(rename = "match")]
    pub pattern: String,
    /// The local username; `{0}` is the first capture group, `{1}` the
    /// second, ...; `{{` and `}}` are literal braces.
    pub output: String,
}

/// The external mapper: identity JSON on stdin, the username on stdout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapperProgram {
    pub command: std::path::PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default = "default_mapper_timeout")]
    pub timeout_secs: u64,
}

fn default_mapper_timeout() -> u64 {
    5
}

/// Why an identity has no local account.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("invalid mapping rule `{pattern}`: {detail}")]
    BadRule { pattern: String, detail: String },
    #[error("no mapping rule matches")]
    NoMatch,
    #[error("mapped name {0:?} is not a valid local username")]
    InvalidName(String),
    #[error("mapped account `{0}` does not exist")]
    NoAccount(String),
    #[error("mapped account `{name}` has uid {uid}, below the minimum {min}")]
    SystemAccount { name: String, uid: u32, min: u32 },
    #[error("mapped account `{0}` is root")]
    Root(String),
    #[error("mapper program: {0}")]
    Mapper(String),
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    field: Field,
    regex: Regex,
    pattern: String,
    output: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Group(usize),
}

/// Parses an output template: `{N}` is capture group N+1, `{{`/`}}` braces.
fn parse_output(output: &str, groups: usize, pattern: &str) -> Result<Vec<Piece>, MappingError> {
    let bad = |detail: String| MappingError::BadRule {
        pattern: pattern.to_owned(),
        detail,
    };
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut chars = output.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                lit.push('}');
            }
            '{' => {
                let mut digits = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(d) if d.is_ascii_digit() => digits.push(d),
                        _ => return Err(bad(format!("output `{output}`: expected `{{N}}`"))),
                    }
                }
                let n: usize = digits
                    .parse()
                    .map_err(|_| bad(format!("output `{output}`: expected `{{N}}`")))?;
                if n >= groups {
                    return Err(bad(format!(
                        "output `{output}` uses {{{n}}} but the pattern has {groups} group(s)"
                    )));
                }
                if !lit.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut lit)));
                }
                pieces.push(Piece::Group(n));
            }
            '}' => return Err(bad(format!("output `{output}`: unmatched `}}`"))),
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        pieces.push(Piece::Literal(lit));
    }
    Ok(pieces)
}

impl Rule {
    pub fn compile(config: &RuleConfig) -> Result<Self, MappingError> {
        let anchored = format!("^(?:{})$", config.pattern);
        let regex = regex::RegexBuilder::new(&anchored)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| MappingError::BadRule {
                pattern: config.pattern.clone(),
                detail: e.to_string(),
            })?;
        let groups = regex.captures_len() - 1;
        let output = parse_output(&config.output, groups, &config.pattern)?;
        Ok(Self {
            field: config.field,
            regex,
            pattern: config.pattern.clone(),
            output,
        })
    }

    /// The rule's output for this identity, if the field is set and matches.
    pub fn apply(&self, identity: &Identity) -> Option<String> {
        let value = match self.field {
            Field::Username => Some(identity.username.as_str()),
            Field::Email => identity.email.as_deref(),
            Field::IdentityProvider => identity.identity_provider.as_deref(),
        }?;
        let caps = self.regex.captures(value)?;
        let mut out = String::new();
        for piece in &self.output {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                Piece::Group(n) => out.push_str(caps.get(n + 1).map_or("", |m| m.as_str())),
            }
        }
        Some(out)
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

/// A local account the agent may run work as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: std::path::PathBuf,
    pub shell: std::path::PathBuf,
}

/// Looks an account up in the passwd database (`getpwnam_r`).
pub fn lookup_account(name: &str) -> Option<Account> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: passwd is plain data; zeroed is a valid initial value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; buf outlives the reads below.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success the fields point into buf as NUL-terminated strings.
    let cstr = |p: *const libc::c_char| {
        if p.is_null() {
            String::new()
        } else {
            unsafe { std::ffi::CStr::from_ptr(p) }
                .to_string_lossy()
                .into_owned()
        }
    };
    Some(Account {
        name: cstr(pwd.pw_name),
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
        home: cstr(pwd.pw_dir).into(),
        shell: cstr(pwd.pw_shell).into(),
    })
}

/// `^[a-z_][a-z0-9_-]{0,31}$`, checked by hand (no regex needed).
pub fn valid_username(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > 32 {
        return false;
    }
    let first = bytes[0];
    if !(first.is_ascii_lowercase() || first == b'_') {
        return false;
    }
    bytes[1..]
        .iter()
        .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Checks a mapped name: syntax, existence, minimum uid, not root.
pub fn validate(
    name: &str,
    min_uid: u32,
    lookup: impl Fn(&str) -> Option<Account>,
) -> Result<Account, MappingError> {
    if !valid_username(name) {
        return Err(MappingError::InvalidName(name.to_owned()));
    }
    let account = lookup(name).ok_or_else(|| MappingError::NoAccount(name.to_owned()))?;
    if account.uid == 0 || account.gid == 0 || name == "root" {
        return Err(MappingError::Root(name.to_owned()));
    }
    if account.uid < min_uid {
        return Err(MappingError::SystemAccount {
            name: name.to_owned(),
            uid: account.uid,
            min: min_uid,
        });
    }
    Ok(account)
}

/// The compiled mapping: rules in order, or a mapper program.
#[derive(Debug, Clone)]
pub struct IdentityMapper {
    rules: Vec<Rule>,
    program: Option<MapperProgram>,
    min_uid: u32,
}

impl IdentityMapper {
    pub fn new(
        rules: &[RuleConfig],
        program: Option<MapperProgram>,
        min_uid: u32,
    ) -> Result<Self, MappingError> {
        let rules = rules.iter().map(Rule::compile).collect::<Result<_, _>>()?;
        Ok(Self {
            rules,
            program,
            min_uid: min_uid.max(1),
        })
    }

    /// The local name the first matching rule (or the program) produces,
    /// not yet validated.
    pub fn map_name(&self, identity: &Identity) -> Result<String, MappingError> {
        if let Some(program) = &self.program {
            return run_mapper(program, identity);
        }
        self.rules
            .iter()
            .find_map(|rule| rule.apply(identity))
            .ok_or(MappingError::NoMatch)
    }

    /// Maps and validates against the passwd database. Blocking (the
    /// mapper program may run).
    pub fn map(&self, identity: &Identity) -> Result<Account, MappingError> {
        self.map_with(identity, lookup_account)
    }

    pub fn map_with(
        &self,
        identity: &Identity,
        lookup: impl Fn(&str) -> Option<Account>,
    ) -> Result<Account, MappingError> {
        let name = self.map_name(identity)?;
        validate(&name, self.min_uid, lookup)
    }
}

/// Runs the mapper program with a timeout; its first stdout line is the name.
fn run_mapper(program: &MapperProgram, identity: &Identity) -> Result<String, MappingError> {
    let err = |e: String| MappingError::Mapper(e);
    let input = serde_json::to_vec(identity).map_err(|e| err(e.to_string()))?;
    let mut child = Command::new(&program.command)
        .args(&program.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .spawn()
        .map_err(|e| err(format!("cannot start {}: {e}", program.command.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A mapper that does not read its input may close stdin early.
        let _ = stdin.write_all(&input);
    }
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(mut stdout) = stdout {
            use std::io::Read as _;
            let _ = stdout.by_ref().take(4096).read_to_end(&mut out);
        }
        out
    });
    let deadline = Instant::now() + Duration::from_secs(program.timeout_secs.max(1));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err(format!("timed out after {} s", program.timeout_secs)));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(err(e.to_string())),
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(err(format!("exited with {status}")));
    }
    let text = String::from_utf8(out).map_err(|_| err("output is not UTF-8".to_owned()))?;
    let name = text.strip_suffix('\n').unwrap_or(&text);
    if name.is_empty() {
        return Err(MappingError::NoMatch);
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(username: &str, email: Option<&str>, idp: Option<&str>) -> Identity {
        Identity {
            identity_id: "id-1".to_owned(),
            username: username.to_owned(),
            email: email.map(str::to_owned),
            identity_provider: idp.map(str::to_owned),
        }
    }

    fn rule(field: Field, pattern: &str, output: &str) -> RuleConfig {
        RuleConfig {
            field,
            pattern: pattern.to_owned(),
            output: output.to_owned(),
        }
    }

    fn fake_lookup(name: &str) -> Option<Account> {
        let uid = match name {
            "alice" => 1001,
            "bob" => 1002,
            "daemon" => 1,
            "toor" => 0,
            _ => return None,
        };
        Some(Account {
            name: name.to_owned(),
            uid,
            gid: uid,
            home: format!("/home/{name}").into(),
            shell: "/bin/sh".into(),
        })
    }

    fn uni_mapper() -> IdentityMapper {
        IdentityMapper::new(
            &[
                rule(Field::Email, r"(.*)@uni\.edu", "{0}"),
                rule(Field::Username, r"ext-([a-z]+)", "{0}"),
            ],
            None,
            1000,
        )
        .unwrap()
    }

    #[test]
    fn first_matching_rule_wins_and_groups_substitute() {
        let m = uni_mapper();
        let a = m
            .map_with(&ident("x", Some("alice@uni.edu"), None), fake_lookup)
            .unwrap();
        assert_eq!(a.name, "alice");
        assert_eq!(a.uid, 1001);
        let b = m
            .map_with(&ident("ext-bob", None, None), fake_lookup)
            .unwrap();
        assert_eq!(b.name, "bob");
    }

    #[test]
    fn rules_are_anchored() {
        let m = uni_mapper();
        // A suffix after the domain must not match.
        assert_eq!(
            m.map_name(&ident("x", Some("alice@uni.edu.evil.com"), None)),
            Err(MappingError::NoMatch)
        );
        // A prefix before the username rule's pattern must not match.
        assert_eq!(
            m.map_name(&ident("evil-ext-bob", None, None)),
            Err(MappingError::NoMatch)
        );
        // An alternation cannot escape the anchors.
        let alt = IdentityMapper::new(&[rule(Field::Username, "alice|bob", "x{{}}")], None, 1000);
        let alt = alt.unwrap();
        assert_eq!(alt.map_name(&ident("alice", None, None)).unwrap(), "x{}");
        assert_eq!(
            alt.map_name(&ident("xbob", None, None)),
            Err(MappingError::NoMatch)
        );
        assert_eq!(
            alt.map_name(&ident("alicex", None, None)),
            Err(MappingError::NoMatch)
        );
    }

    #[test]
    fn identity_provider_rule_and_literal_output() {
        let m = IdentityMapper::new(
            &[rule(
                Field::IdentityProvider,
                r"https://idp\.example",
                "alice",
            )],
            None,
            1000,
        )
        .unwrap();
        assert_eq!(
            m.map_with(&ident("u", None, Some("https://idp.example")), fake_lookup)
                .unwrap()
                .name,
            "alice"
        );
        assert_eq!(
            m.map_name(&ident("u", None, None)),
            Err(MappingError::NoMatch)
        );
    }

    #[test]
    fn bad_rules_are_refused_at_load() {
        assert!(matches!(
            IdentityMapper::new(&[rule(Field::Email, "(.*", "{0}")], None, 1000),
            Err(MappingError::BadRule { .. })
        ));
        // {1} with only one group.
        assert!(matches!(
            IdentityMapper::new(&[rule(Field::Email, "(.*)@x", "{1}")], None, 1000),
            Err(MappingError::BadRule { .. })
        ));
        assert!(matches!(
            IdentityMapper::new(&[rule(Field::Email, "(.*)@x", "{a}")], None, 1000),
            Err(MappingError::BadRule { .. })
        ));
        assert!(matches!(
            IdentityMapper::new(&[rule(Field::Email, "(.*)@x", "a}")], None, 1000),
            Err(MappingError::BadRule { .. })
        ));
    }

    #[test]
    fn hostile_identities_never_yield_an_account() {
        let m = IdentityMapper::new(&[rule(Field::Username, "(.*)", "{0}")], None, 1000).unwrap();
        let long = "a".repeat(10_000);
        let hostile = [
            "alice\nroot",
            "alice\n",
            "../alice",
            "..",
            "alice/../root",
            "alice; rm -rf /",
            "$(id)",
            "`id`",
            "alice|bob",
            "alice bob",
            "Alice",
            "álice",
            "alice\u{0}",
            "",
            "-alice",
            "root",
            "toor",
            "daemon",
            long.as_str(),
        ];
        for name in hostile {
            let result = m.map_with(&ident(name, None, None), fake_lookup);
            assert!(result.is_err(), "{name:?} mapped to {result:?}");
        }
        // `.` in patterns does not match a newline, so "alice\nroot" cannot
        // match `(.*)` at all; the name check would refuse it anyway.
        assert_eq!(
            m.map_name(&ident("alice\nroot", None, None)),
            Err(MappingError::NoMatch)
        );
        assert!(m.map_with(&ident("root", None, None), fake_lookup).is_err());
        assert!(matches!(
            m.map_with(&ident("toor", None, None), fake_lookup),
            Err(MappingError::Root(_))
        ));
        assert!(matches!(
            m.map_with(&ident("daemon", None, None), fake_lookup),
            Err(MappingError::SystemAccount { uid: 1, .. })
        ));
        assert!(matches!(
            m.map_with(&ident("nobody-here", None, None), fake_lookup),
            Err(MappingError::NoAccount(_))
        ));
    }

    #[test]
    fn username_syntax() {
        assert!(valid_username("alice"));
        assert!(valid_username("_svc"));
        assert!(valid_username("lattice-alice"));
        assert!(valid_username(&"a".repeat(32)));
        assert!(!valid_username(&"a".repeat(33)));
        assert!(!valid_username("1alice"));
        assert!(!valid_username("al.ice"));
        assert!(!valid_username("al ice"));
        assert!(!valid_username("ALICE"));
    }

    #[test]
    fn real_root_account_is_refused() {
        // Whatever the minimum uid, root is never a target.
        assert!(matches!(
            validate("root", 0, lookup_account),
            Err(MappingError::Root(_))
        ));
        assert!(lookup_account("no-such-user-lattice").is_none());
        assert!(lookup_account("bad\0name").is_none());
    }

    fn script(body: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mapper.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, path)
    }

    #[test]
    fn mapper_program_gets_json_and_returns_a_name() {
        let (_dir, path) = script(r#"grep -q '"username":"carol"' && echo alice"#);
        let program = MapperProgram {
            command: path,
            args: vec![],
            timeout_secs: 5,
        };
        let m = IdentityMapper::new(&[], Some(program), 1000).unwrap();
        assert_eq!(
            m.map_with(&ident("carol", None, None), fake_lookup)
                .unwrap()
                .name,
            "alice"
        );
        // grep fails -> non-zero exit -> error, nothing runs.
        assert!(matches!(
            m.map_with(&ident("dave", None, None), fake_lookup),
            Err(MappingError::Mapper(_))
        ));
    }

    #[test]
    fn mapper_program_output_is_validated_and_timed_out() {
        let (_dir, path) = script("echo 'alice; id'");
        let m = IdentityMapper::new(
            &[],
            Some(MapperProgram {
                command: path,
                args: vec![],
                timeout_secs: 5,
            }),
            1000,
        )
        .unwrap();
        assert!(matches!(
            m.map_with(&ident("x", None, None), fake_lookup),
            Err(MappingError::InvalidName(_))
        ));
        let (_dir2, slow) = script("sleep 30");
        let m = IdentityMapper::new(
            &[],
            Some(MapperProgram {
                command: slow,
                args: vec![],
                timeout_secs: 1,
            }),
            1000,
        )
        .unwrap();
        let started = Instant::now();
        let result = m.map_with(&ident("x", None, None), fake_lookup);
        assert!(matches!(result, Err(MappingError::Mapper(ref m)) if m.contains("timed out")));
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
