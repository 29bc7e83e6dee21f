//! Output as docker prints it: tab-aligned tables, relative times
//! ("3 weeks ago"), sizes ("132MB"), and `--format` Go templates (a subset:
//! field paths, `json`, `index`, `join`, `upper`, `lower`, `table`).

use chrono::{DateTime, Utc};
use serde_json::Value;

/// go-units `HumanDuration`, which docker uses for CREATED columns.
pub fn human_duration(seconds: i64) -> String {
    let hours_rounded = (seconds as f64 / 3600.0 + 0.5) as i64;
    match seconds {
        s if s < 1 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s / 60 == 1 => "About a minute".into(),
        s if s / 60 < 60 => format!("{} minutes", s / 60),
        _ if hours_rounded == 1 => "About an hour".into(),
        _ if hours_rounded < 48 => format!("{hours_rounded} hours"),
        _ if hours_rounded < 24 * 7 * 2 => format!("{} days", hours_rounded / 24),
        _ if hours_rounded < 24 * 30 * 2 => format!("{} weeks", hours_rounded / 24 / 7),
        _ if hours_rounded < 24 * 365 * 2 => format!("{} months", hours_rounded / 24 / 30),
        s => format!("{} years", s / 3600 / 24 / 365),
    }
}

/// An RFC 3339 timestamp.
pub fn parse_time(created: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(created?).ok().map(|t| t.with_timezone(&Utc))
}

/// `3 weeks ago`, relative to `now`; `N/A` when the time is unknown.
pub fn since(created: Option<&str>, now: DateTime<Utc>) -> String {
    match parse_time(created) {
        Some(t) => format!("{} ago", human_duration((now - t).num_seconds())),
        None => "N/A".into(),
    }
}

/// A timestamp as docker's `CreatedAt` shows it: `2024-01-02 03:04:05 +0000 UTC`.
pub fn created_at(created: Option<&str>) -> String {
    match parse_time(created) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string(),
        None => String::new(),
    }
}

pub use kiln::humanize::table_size as size;

/// `s` cut to `max` characters, the last one an ellipsis, as docker's
/// `Ellipsis` does.
pub fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Aligns tab-separated cells as docker's `tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`:
/// each column as wide as its widest cell plus 3, at least 10; the last
/// cell of a line is not padded.
pub fn table(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            let w = (cell.chars().count() + 3).max(10);
            if widths.len() <= i {
                widths.push(w);
            } else {
                widths[i] = widths[i].max(w);
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                line.push_str(&format!("{:<w$}", cell, w = widths[i]));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TemplateError {
    #[error("template {template:?}: unclosed action")]
    Unclosed { template: String },
    #[error("template {template:?}: cannot parse {action:?}")]
    Action { template: String, action: String },
    #[error("template {template:?}: unknown function {name:?} (kiln knows json, index, join, upper, lower, print)")]
    Function { template: String, name: String },
    #[error("template: {name} needs {wanted} arguments")]
    Arity { name: String, wanted: usize },
    #[error("template: can't evaluate field {field} in {value}")]
    Field { field: String, value: String },
}

/// A parsed `--format` template.
#[derive(Debug, Clone)]
pub struct Template {
    /// Started with `table `: print a header row and align columns.
    pub table: bool,
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Pipeline(Vec<Command>),
}

#[derive(Debug, Clone)]
struct Command {
    /// A function name, or `None` for a bare argument (`.Field`).
    func: Option<String>,
    args: Vec<Arg>,
}

#[derive(Debug, Clone)]
enum Arg {
    Path(Vec<String>),
    Str(String),
    Int(i64),
}

const FUNCTIONS: [&str; 6] = ["json", "index", "join", "upper", "lower", "print"];

impl Template {
    /// Parses docker's `--format` text: `\t` and `\n` stand for tab and
    /// newline, and a leading `table ` asks for a table.
    pub fn parse(format: &str) -> Result<Template, TemplateError> {
        let (table, body) = match format.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(' ') => (true, rest.trim()),
            _ => (false, format),
        };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = body.as_str();
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| TemplateError::Unclosed { template: format.into() })?;
            let action = after[..end].trim().trim_start_matches('-').trim_end_matches('-').trim();
            parts.push(Part::Pipeline(parse_pipeline(action, format)?));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { table, parts })
    }

    /// Renders the template for one value.
    pub fn render(&self, value: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Pipeline(cmds) => out.push_str(&display(&eval_pipeline(cmds, value)?)),
            }
        }
        Ok(out)
    }

    /// The header row for a table: each field's name in docker's upper-case
    /// spelling (`{{.Repository}}` → `REPOSITORY`, `.CreatedSince` → `CREATED`).
    pub fn header(&self, names: &dyn Fn(&str) -> Option<&'static str>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Pipeline(cmds) => {
                    let field = cmds.iter().flat_map(|c| &c.args).find_map(|a| match a {
                        Arg::Path(p) => p.last().cloned(),
                        _ => None,
                    });
                    let field = field.unwrap_or_default();
                    out.push_str(&names(&field).map(str::to_string).unwrap_or_else(|| field.to_uppercase()));
                }
            }
        }
        out
    }
}

fn parse_pipeline(action: &str, template: &str) -> Result<Vec<Command>, TemplateError> {
    let bad = || TemplateError::Action { template: template.into(), action: action.into() };
    let mut cmds = Vec::new();
    for segment in action.split('|') {
        let words = split_words(segment.trim()).ok_or_else(bad)?;
        let Some(first) = words.first() else { return Err(bad()) };
        let (func, arg_words) = if first.starts_with('.') || first.starts_with('"') {
            (None, &words[..])
        } else if FUNCTIONS.contains(&first.as_str()) {
            (Some(first.clone()), &words[1..])
        } else {
            return Err(TemplateError::Function { template: template.into(), name: first.clone() });
        };
        let args = arg_words.iter().map(|w| parse_arg(w).ok_or_else(bad)).collect::<Result<Vec<_>, _>>()?;
        if func.is_none() && args.len() != 1 {
            return Err(bad());
        }
        cmds.push(Command { func, args });
    }
    Ok(cmds)
}

/// Splits on spaces, keeping "quoted strings" (with \" escapes) whole.
fn split_words(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' {
            word.push(chars.next()?);
            loop {
                let c = chars.next()?;
                word.push(c);
                if c == '\\' {
                    word.push(chars.next()?);
                } else if c == '"' {
                    break;
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word);
    }
    Some(words)
}

fn parse_arg(word: &str) -> Option<Arg> {
    if word == "." {
        return Some(Arg::Path(Vec::new()));
    }
    if let Some(path) = word.strip_prefix('.') {
        return Some(Arg::Path(path.split('.').map(str::to_string).collect()));
    }
    if word.starts_with('"') {
        return serde_json::from_str::<String>(word).ok().map(Arg::Str);
    }
    word.parse().ok().map(Arg::Int)
}

fn eval_pipeline(cmds: &[Command], dot: &Value) -> Result<Value, TemplateError> {
    let mut piped: Option<Value> = None;
    for cmd in cmds {
        let mut args = cmd.args.iter().map(|a| eval_arg(a, dot)).collect::<Result<Vec<_>, _>>()?;
        if let Some(v) = piped.take() {
            args.push(v);
        }
        piped = Some(match cmd.func.as_deref() {
            None => args.pop().unwrap_or(Value::Null),
            Some(name) => call(name, args)?,
        });
    }
    Ok(piped.unwrap_or(Value::Null))
}

fn eval_arg(arg: &Arg, dot: &Value) -> Result<Value, TemplateError> {
    match arg {
        Arg::Str(s) => Ok(Value::String(s.clone())),
        Arg::Int(i) => Ok(Value::from(*i)),
        Arg::Path(path) => {
            let mut v = dot;
            for field in path {
                v = match v {
                    Value::Object(map) => map.get(field).unwrap_or(&Value::Null),
                    Value::Null => &Value::Null,
                    other => {
                        return Err(TemplateError::Field { field: field.clone(), value: display(other) });
                    }
                };
            }
            Ok(v.clone())
        }
    }
}

fn call(name: &str, args: Vec<Value>) -> Result<Value, TemplateError> {
    let arity = |wanted: usize| {
        if args.len() == wanted {
            Ok(())
        } else {
            Err(TemplateError::Arity { name: name.into(), wanted })
        }
    };
    match name {
        "json" => {
            arity(1)?;
            Ok(Value::String(serde_json::to_string(&args[0]).unwrap_or_default()))
        }
        "index" => {
            arity(2)?;
            Ok(match (&args[0], &args[1]) {
                (Value::Object(map), Value::String(key)) => map.get(key).cloned().unwrap_or(Value::Null),
                (Value::Array(items), Value::Number(n)) => {
                    n.as_u64().and_then(|i| items.get(i as usize)).cloned().unwrap_or(Value::Null)
                }
                _ => Value::Null,
            })
        }
        "join" => {
            arity(2)?;
            let sep = display(&args[1]);
            Ok(Value::String(match &args[0] {
                Value::Array(items) => items.iter().map(display).collect::<Vec<_>>().join(&sep),
                other => display(other),
            }))
        }
        "upper" => {
            arity(1)?;
            Ok(Value::String(display(&args[0]).to_uppercase()))
        }
        "lower" => {
            arity(1)?;
            Ok(Value::String(display(&args[0]).to_lowercase()))
        }
        _ => Ok(Value::String(args.iter().map(display).collect::<Vec<_>>().join(" "))),
    }
}

/// A value as Go's text/template prints it: slices as `[a b]`, maps as
/// `map[k:v]`, a missing value as `<no value>`.
fn display(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => format!("[{}]", items.iter().map(display_inner).collect::<Vec<_>>().join(" ")),
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            format!(
                "map[{}]",
                entries.iter().map(|(k, v)| format!("{k}:{}", display_inner(v))).collect::<Vec<_>>().join(" ")
            )
        }
    }
}

fn display_inner(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        other => display(other),
    }
}

/// Prints `values` with `format`: `json` gives one JSON object per line, a
/// `table …` template a header and aligned columns, any other template one
/// line per value.
pub fn print_formatted(
    format: &str,
    values: &[Value],
    names: &dyn Fn(&str) -> Option<&'static str>,
) -> anyhow::Result<()> {
    if format == "json" {
        for v in values {
            println!("{}", serde_json::to_string(v)?);
        }
        return Ok(());
    }
    let template = Template::parse(format)?;
    let mut lines = Vec::new();
    if template.table {
        lines.push(template.header(names));
    }
    for v in values {
        lines.push(template.render(v)?);
    }
    if template.table {
        let rows: Vec<Vec<String>> = lines.iter().map(|l| l.split('\t').map(str::to_string).collect()).collect();
        print!("{}", table(&rows));
    } else {
        for l in lines {
            println!("{l}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-06-01T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn relative_times_like_docker() {
        let cases = [
            ("2024-06-01T12:00:00Z", "Less than a second ago"),
            ("2024-06-01T11:59:59Z", "1 second ago"),
            ("2024-06-01T11:59:15Z", "45 seconds ago"),
            ("2024-06-01T11:58:30Z", "About a minute ago"),
            ("2024-06-01T11:30:00Z", "30 minutes ago"),
            ("2024-06-01T11:00:00Z", "About an hour ago"),
            ("2024-06-01T10:29:00Z", "2 hours ago"),
            ("2024-05-30T13:00:00Z", "47 hours ago"),
            ("2024-05-30T12:00:00Z", "2 days ago"),
            ("2024-05-20T12:00:00Z", "12 days ago"),
            ("2024-05-11T12:00:00Z", "3 weeks ago"),
            ("2024-03-01T12:00:00Z", "3 months ago"),
            ("2022-01-01T00:00:00Z", "2 years ago"),
            ("2024-06-01T14:00:00+02:00", "Less than a second ago"),
        ];
        for (created, want) in cases {
            assert_eq!(since(Some(created), now()), want, "{created}");
        }
        assert_eq!(since(None, now()), "N/A");
        assert_eq!(since(Some("yesterday"), now()), "N/A");
        // A clock behind the image's time still prints something sane.
        assert_eq!(since(Some("2024-06-02T00:00:00Z"), now()), "Less than a second ago");
    }

    #[test]
    fn sizes_like_docker_images() {
        assert_eq!(size(0), "0B");
        assert_eq!(size(999), "999B");
        assert_eq!(size(1000), "1kB");
        assert_eq!(size(1234), "1.23kB");
        assert_eq!(size(132_456_000), "132MB");
        assert_eq!(size(7_331_000), "7.33MB");
        assert_eq!(size(12_500_000), "12.5MB");
        assert_eq!(size(2_000_000_000), "2GB");
    }

    #[test]
    fn tables_align_like_tabwriter() {
        let rows = vec![
            vec!["REPOSITORY".into(), "TAG".into(), "IMAGE ID".into(), "SIZE".into()],
            vec!["alpine".into(), "latest".into(), "c1aabb73d233".into(), "7.33MB".into()],
        ];
        assert_eq!(
            table(&rows),
            "REPOSITORY   TAG       IMAGE ID       SIZE\nalpine       latest    c1aabb73d233   7.33MB\n"
        );
    }

    #[test]
    fn ellipsis_cuts_long_text() {
        assert_eq!(ellipsis("short", 45), "short");
        assert_eq!(ellipsis("abcdef", 4), "abc…");
    }

    #[test]
    fn templates_render_fields_and_functions() {
        let v = json!({"Id": "abc", "Config": {"Env": ["A=1", "B=2"], "Labels": {"k": "v"}}, "Size": 12, "Nil": null});
        let render = |t: &str| Template::parse(t).unwrap().render(&v).unwrap();
        assert_eq!(render("{{.Id}}"), "abc");
        assert_eq!(render("id={{ .Id }}\\t{{.Size}}"), "id=abc\t12");
        assert_eq!(render("{{.Config.Env}}"), "[A=1 B=2]");
        assert_eq!(render("{{json .Config.Env}}"), r#"["A=1","B=2"]"#);
        assert_eq!(render("{{.Config.Env | json}}"), r#"["A=1","B=2"]"#);
        assert_eq!(render("{{json .Config}}"), r#"{"Env":["A=1","B=2"],"Labels":{"k":"v"}}"#);
        assert_eq!(render(r#"{{index .Config.Labels "k"}}"#), "v");
        assert_eq!(render(r#"{{join .Config.Env ","}}"#), "A=1,B=2");
        assert_eq!(render("{{.Config.Labels}}"), "map[k:v]");
        assert_eq!(render("{{.Missing}}"), "<no value>");
        assert_eq!(render("{{upper .Id}}"), "ABC");
        assert!(matches!(Template::parse("{{.Id"), Err(TemplateError::Unclosed { .. })));
        assert!(matches!(Template::parse("{{frob .Id}}"), Err(TemplateError::Function { .. })));
        assert!(Template::parse("{{.Id}}").unwrap().render(&json!({"Id": "x"})).is_ok());
        assert!(matches!(Template::parse("{{.Id.X}}").unwrap().render(&v), Err(TemplateError::Field { .. })));
    }

    #[test]
    fn table_templates_have_headers() {
        let t = Template::parse("table {{.Repository}}\\t{{.CreatedSince}}").unwrap();
        assert!(t.table);
        let names = |f: &str| if f == "CreatedSince" { Some("CREATED") } else { None };
        assert_eq!(t.header(&names), "REPOSITORY\tCREATED");
    }
}
