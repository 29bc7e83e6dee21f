//! `--chown` ids the kernel cannot store are refused with the Dockerfile
//! line, before anything is built (they used to be accepted and break the
//! next RUN). Run as the unprivileged test user when the tests run as root.

use kiln_integration::Sandbox;

#[test]
fn chown_beyond_4294967294_is_refused_with_its_line() {
    let sb = Sandbox::new();
    sb.write("ctx/a.txt", "a\n");
    let ctx = sb.ctx();
    for (dockerfile, line) in [
        ("FROM scratch\nCOPY --chown=99999999999 a.txt /a\n", "Dockerfile:2:6"),
        ("FROM scratch\nADD --chown=1:4294967295 a.txt /a\n", "Dockerfile:2:5"),
        ("FROM scratch\nARG U=99999999999\nCOPY --chown=$U a.txt /a\n", "Dockerfile:3:1"),
    ] {
        sb.dockerfile(dockerfile);
        for check in [true, false] {
            let mut args = vec!["build", "-t", "big"];
            if check {
                args.push("--check");
            }
            args.push(ctx.to_str().unwrap());
            let out = sb.kiln(&args);
            assert!(!out.success(), "{}", out.transcript());
            out.stderr_has(&[line, "numeric ids go from 0 to 4294967294"]);
        }
    }
    assert!(!sb.kiln(&["inspect", "big"]).success(), "nothing was built");

    // A name the image maps to an id out of range is no user at all.
    sb.write("ctx/etc/passwd", "big:x:99999999999:0::/:/bin/sh\n");
    sb.dockerfile("FROM scratch\nCOPY etc/passwd /etc/passwd\nCOPY --chown=big a.txt /a\n");
    let out = sb.kiln(&["build", "-t", "big", ctx.to_str().unwrap()]);
    assert!(!out.success(), "{}", out.transcript());
    out.stderr_has(&["unable to find user big"]);

    // The largest valid id works.
    sb.dockerfile("FROM scratch\nCOPY --chown=4294967294:4294967294 a.txt /a\n");
    sb.kiln(&["build", "-t", "max", ctx.to_str().unwrap()]).ok();
    let entry = sb.image("max").fs()["a"].clone();
    assert_eq!((entry.uid, entry.gid), (4294967294, 4294967294), "{entry:?}");
}
