//! HEALTHCHECK's arguments: `NONE`, or `CMD` with its command and the
//! duration and retry flags docker checks.

use super::{not_strings, Args, Cx};
use crate::dockerfile::ast::{CmdLine, HealthSpec};
use crate::dockerfile::duration::parse_go_duration;
use crate::dockerfile::error::DockerfileError;
use crate::dockerfile::flags::Flags;
use crate::dockerfile::words::{self, Json};

pub(super) fn healthcheck(cx: &Cx, flags: Flags, args: Args) -> Result<Option<HealthSpec>, DockerfileError> {
    let kind_len = args.text.find(char::is_whitespace).unwrap_or(args.text.len());
    let kind = &args.text[..kind_len];
    let rest_untrimmed = &args.text[kind_len..];
    let rest = Args {
        text: rest_untrimmed.trim(),
        offset: args.offset + kind_len + (rest_untrimmed.len() - rest_untrimmed.trim_start().len()),
    };
    match kind.to_ascii_uppercase().as_str() {
        "" => Err(cx
            .missing("at least one argument")
            .with_help("write HEALTHCHECK [OPTIONS] CMD <command> or HEALTHCHECK NONE")),
        "NONE" => {
            if !rest.text.is_empty() {
                return Err(cx.err(rest.offset, "HEALTHCHECK NONE takes no arguments"));
            }
            if !flags.is_empty() {
                return Err(cx.err(cx.keyword_offset, "HEALTHCHECK NONE takes no flags"));
            }
            Ok(None)
        }
        "CMD" => {
            let test = match words::parse_json_array(rest.text) {
                Json::Strings(v) if !v.is_empty() => CmdLine::Exec(v),
                Json::NotStrings => return Err(not_strings(cx, rest)),
                Json::NotArray if !rest.text.is_empty() => CmdLine::Shell(rest.text.to_string()),
                _ => return Err(cx.err(args.offset, "missing command after HEALTHCHECK CMD")),
            };
            Ok(Some(HealthSpec {
                test,
                interval: duration_flag(cx, &flags, "interval")?,
                timeout: duration_flag(cx, &flags, "timeout")?,
                start_period: duration_flag(cx, &flags, "start-period")?,
                start_interval: duration_flag(cx, &flags, "start-interval")?,
                retries: retries(cx, &flags)?,
            }))
        }
        _ => Err(cx
            .err(args.offset, format!("unknown type {kind:?} in HEALTHCHECK"))
            .with_help("use HEALTHCHECK CMD <command> or HEALTHCHECK NONE")),
    }
}

/// Docker rejects non-zero durations under a millisecond.
fn duration_flag(cx: &Cx, flags: &Flags, name: &str) -> Result<Option<i64>, DockerfileError> {
    let Some((value, offset)) = flags.string(name) else {
        return Ok(None);
    };
    let nanos = parse_go_duration(&value).map_err(|m| {
        cx.err(offset, format!("invalid --{name}: {m}")).with_help("use a duration like 30s, 1m30s or 500ms")
    })?;
    if nanos != 0 && nanos < 1_000_000 {
        return Err(cx.err(offset, format!("--{name} cannot be less than 1ms")));
    }
    Ok(Some(nanos))
}

fn retries(cx: &Cx, flags: &Flags) -> Result<Option<i64>, DockerfileError> {
    let Some((value, offset)) = flags.string("retries") else {
        return Ok(None);
    };
    let n: i32 = value.parse().map_err(|_| cx.err(offset, format!("invalid --retries {value:?}: not an integer")))?;
    if n < 0 {
        return Err(cx.err(offset, format!("--retries cannot be negative ({n})")));
    }
    Ok(Some(i64::from(n)))
}
