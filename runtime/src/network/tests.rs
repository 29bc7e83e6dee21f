use super::etc_files::parse_default_gateway;
use super::listening::sockets_on;
use super::*;

#[test]
fn helper_choice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().as_os_str();
    assert!(matches!(find_with(None, Some(path)), Err(NetworkError::NoHelper)));
    let slirp = dir.path().join("slirp4netns");
    fs::write(&slirp, "").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&slirp, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(find_with(None, Some(path)).unwrap().kind, HelperKind::Slirp4netns);
    let pasta = dir.path().join("pasta");
    fs::copy(&slirp, &pasta).unwrap();
    assert_eq!(find_with(None, Some(path)).unwrap().kind, HelperKind::Pasta, "pasta is preferred");
    assert_eq!(find_with(Some("slirp4netns"), Some(path)).unwrap().path, slirp);
    fs::remove_file(&slirp).unwrap();
    let err = find_with(Some("slirp4netns"), Some(path)).unwrap_err();
    assert!(err.to_string().contains("apt-get install slirp4netns"), "{err}");
    assert!(matches!(find_with(Some("vde"), Some(path)), Err(NetworkError::UnknownHelper(_))));
    let none = NetworkError::NoHelper.to_string();
    assert!(none.contains("apt-get install passt") && none.contains("slirp4netns"), "{none}");
}

#[test]
fn etc_files() {
    let host = "# generated\nnameserver 127.0.0.53\nsearch example.org\noptions edns0\n";
    assert_eq!(resolv_conf(host, IpAddr::V4(PASTA_DNS)), "nameserver 169.254.1.1\nsearch example.org\noptions edns0\n");
    let hosts = hosts_file("127.0.0.1 localhost", Some(IpAddr::V4(SLIRP_HOST)));
    assert_eq!(hosts, "127.0.0.1 localhost\n10.0.2.2\thost.containers.internal host.docker.internal\n");
    let table = "Iface\tDestination\tGateway \tFlags\n\
                     eth0\t0002000A\t00000000\t0001\n\
                     eth0\t00000000\t010200C0\t0003\n";
    assert_eq!(parse_default_gateway(table), Some(Ipv4Addr::new(192, 0, 2, 1)));
    let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1\n\
                   1: 0100007F:1F91 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 4343 1\n";
    assert_eq!(sockets_on(tcp, 8080, Proto::Tcp).collect::<Vec<_>>(), ["4242"]);
    assert_eq!(sockets_on(tcp, 8081, Proto::Tcp).count(), 0, "a connection is not a listener");
}
