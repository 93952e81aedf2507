//! Groups and sharing through the real binary: `lattice dev`'s identity
//! shares its `local` collection with a client application's identity
//! (a second principal) through a group, by name, and takes it back; and
//! a function and the endpoint by grant.

use lattice_protocol::api::{TokenRequest, WhoAmI};
use lattice_tests::platform::{failed, succeeded, DevOptions, DevPlatform};

const LATTICE: &str = env!("CARGO_BIN_EXE_lattice");

/// A client application of the dev identity, and a token of its own.
fn robot(platform: &DevPlatform) -> (String, String) {
    let created = succeeded(platform.cli(&["client", "create", "robot", "--format", "json"]));
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = lattice_client::Client::new(&platform.url, None).unwrap();
    let token = runtime
        .block_on(client.token(&TokenRequest::ClientCredentials {
            client_id: created["id"].as_str().unwrap().parse().unwrap(),
            client_secret: created["client_secret"].as_str().unwrap().to_owned(),
            scope: None,
        }))
        .unwrap()
        .access_token;
    let whoami: WhoAmI = runtime
        .block_on(client.with_token(Some(token.clone())).whoami())
        .unwrap();
    (token, whoami.identity.id.to_string())
}

#[test]
fn a_group_shares_a_folder_by_name_and_loses_it_again() {
    let platform = DevPlatform::start(
        LATTICE.as_ref(),
        DevOptions {
            local_workers: Some(1),
            ..Default::default()
        },
    );
    let root = platform.local_collection_root();
    std::fs::create_dir_all(root.join("shared")).unwrap();
    std::fs::write(root.join("shared/result.csv"), "a,b\n1,2\n").unwrap();
    std::fs::create_dir_all(root.join("shared-private")).unwrap();
    let (robot_token, robot_id) = robot(&platform);
    let robot_principal = format!("identity:{robot_id}");

    // Nothing shared yet: the robot does not even see the collection.
    let (code, _) = failed(platform.cli_as(&robot_token, &["ls", "local:/shared"]));
    assert_eq!(code, 4);

    // A group by name, a member by principal, a rule naming the group.
    succeeded(platform.cli(&["group", "create", "lab", "--description", "the lab"]));
    let added = succeeded(platform.cli(&["group", "member", "add", "lab", &robot_principal]));
    assert!(added.contains("ok") && added.contains("active"), "{added}");
    let rule = succeeded(platform.cli(&[
        "acl",
        "add",
        "local:/shared/",
        "lab",
        "--permissions",
        "r",
        "--expires",
        "30d",
        "--format",
        "json",
        "--jmespath",
        "id",
    ]));
    let rule: String = serde_json::from_str(&rule).unwrap();

    // The robot reads inside, by the collection's name; nothing else.
    let listing = succeeded(platform.cli_as(&robot_token, &["ls", "local:/shared"]));
    assert!(listing.contains("result.csv"), "{listing}");
    let (code, message) = failed(platform.cli_as(&robot_token, &["ls", "local:/shared-private"]));
    assert_eq!(code, 3, "{message}");
    assert!(message.contains("no read access"), "{message}");
    let (code, _) = failed(platform.cli_as(&robot_token, &["mkdir", "local:/shared/new"]));
    assert_eq!(code, 3);
    let (code, _) = failed(platform.cli_as(&robot_token, &["acl", "list", "local"]));
    assert_eq!(code, 3);
    let collections = succeeded(platform.cli_as(&robot_token, &["collection", "list"]));
    assert!(
        collections.contains("local") && collections.contains("(shared by "),
        "{collections}"
    );
    let own = succeeded(platform.cli(&["collection", "list"]));
    assert!(!own.contains("shared by"), "{own}");

    // Usage mistakes are refused before anything changes.
    let (code, message) =
        failed(platform.cli(&["acl", "add", "local:/x/", "user:bob", "--permissions", "r"]));
    assert_eq!(code, 2, "{message}");
    assert!(message.contains("identity:ID"), "{message}");
    let (code, message) = failed(platform.cli(&[
        "acl",
        "add",
        "local:/x/",
        "nobody-at-all",
        "--permissions",
        "r",
    ]));
    assert_eq!(code, 4, "{message}");
    let (code, message) =
        failed(platform.cli(&["acl", "add", "local:x/", "lab", "--permissions", "r"]));
    assert_eq!(code, 4, "{message}");
    assert!(message.contains("must start with `/`"), "{message}");
    let rules = succeeded(platform.cli(&["acl", "list", "local", "--format", "json"]));
    let rules: serde_json::Value = serde_json::from_str(&rules).unwrap();
    assert_eq!(rules.as_array().unwrap().len(), 1, "{rules}");

    // Leaving the group (or being removed) ends the access at once.
    let left = succeeded(platform.cli_as(&robot_token, &["group", "leave", "lab"]));
    assert!(left.contains("left"), "{left}");
    let (code, _) = failed(platform.cli_as(&robot_token, &["ls", "local:/shared"]));
    assert_eq!(code, 4, "no longer shared: the name does not resolve");

    // The last admin cannot leave; the batch says why and exits non-zero.
    let (code, message) = failed(platform.cli(&["group", "leave", "lab"]));
    assert_eq!(code, 4, "{message}");
    // A function and the endpoint, shared with the robot by principal.
    let function = succeeded(platform.cli(&[
        "function",
        "register",
        "--shell",
        "echo shared {who}",
        "--name",
        "greet",
        "--format",
        "json",
        "--jmespath",
        "id",
    ]));
    let function: String = serde_json::from_str(&function).unwrap();
    let endpoint = succeeded(platform.cli(&[
        "endpoint",
        "show",
        "local",
        "--format",
        "json",
        "--jmespath",
        "id",
    ]));
    let endpoint: String = serde_json::from_str(&endpoint).unwrap();
    let submit = [
        "task",
        "submit",
        function.as_str(),
        "--endpoint",
        endpoint.as_str(),
        "--arg",
        "who=robot",
    ];
    let (code, message) = failed(platform.cli_as(&robot_token, &submit));
    assert_eq!(code, 3, "{message}");
    succeeded(platform.cli(&["function", "share", "greet", &robot_principal]));
    succeeded(platform.cli(&["endpoint", "share", "local", &robot_principal]));
    let shares = succeeded(platform.cli(&["function", "shares", "greet"]));
    assert_eq!(shares.trim(), robot_principal, "{shares}");
    let task = succeeded(platform.cli_as(&robot_token, &submit));
    let waited = succeeded(platform.cli_as(&robot_token, &["task", "wait", task.trim()]));
    assert!(waited.contains("shared robot"), "{waited}");
    let (code, _) = failed(platform.cli(&["endpoint", "share", "local", "--public"]));
    assert_eq!(code, 4, "an endpoint is never public");
    succeeded(platform.cli(&["function", "unshare", "greet", &robot_principal]));
    let (code, _) = failed(platform.cli_as(&robot_token, &submit));
    assert_eq!(code, 3);

    let audit = succeeded(platform.cli(&["collection", "audit", "local"]));
    assert!(audit.contains("acl.create"), "{audit}");
    succeeded(platform.cli(&["acl", "delete", "local", &rule]));
}
