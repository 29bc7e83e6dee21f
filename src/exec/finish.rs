//! Build options that shape the result rather than the steps: `--label`,
//! `--source-date-epoch`, and how they reach the cache key.

use kiln_overlay::tarfmt::EntryMeta;

use crate::image::config::ImageConfig;

use super::state::StageState;
use super::BuildOptions;

/// The final image's config after `--label` and `--source-date-epoch`.
/// `created` is the build's timestamp (the epoch, when one is given). As
/// BuildKit's exporter does, the epoch leaves the first `base_history`
/// entries (the base image's) as they are and clamps the others.
pub fn apply(config: &mut ImageConfig, opts: &BuildOptions, created: &str, base_history: usize) {
    if !opts.labels.is_empty() {
        let labels = config.config.labels.get_or_insert_with(Default::default);
        for (k, v) in &opts.labels {
            labels.insert(k.clone(), v.clone());
        }
    }
    if let Some(epoch) = opts.source_date_epoch {
        // Entries this build wrote carry `created` already; what comes from a
        // cache record written at another time, or a base entry without a
        // time, is clamped. Base entries keep their times: they are inputs,
        // and the base's own config shows the same history.
        let not_after = |c: &str| {
            chrono::DateTime::parse_from_rfc3339(c)
                .is_ok_and(|t| (t.timestamp(), t.timestamp_subsec_nanos()) <= (epoch, 0))
        };
        for h in config.history.iter_mut().skip(base_history) {
            if !h.created.as_deref().is_some_and(not_after) {
                h.created = Some(created.to_string());
            }
        }
        config.created = Some(created.to_string());
    }
}

/// Options that change what a step writes are part of every cache key, so a
/// build never reuses a layer written under other options.
pub fn scope_key(state: &mut StageState, opts: &BuildOptions) {
    let mut tag = String::new();
    if let Some(epoch) = opts.source_date_epoch {
        tag.push_str(&format!("+epoch:{}", epoch));
    }
    if !opts.layers {
        tag.push_str("+stage-layers");
    }
    // A stage FROM another stage inherits a key that is scoped already.
    if !state.key.ends_with(&tag) {
        state.key.push_str(&tag);
    }
}

/// `meta` with its mtime no later than `epoch`.
pub fn clamp(meta: &EntryMeta, epoch: Option<i64>) -> EntryMeta {
    let mut meta = meta.clone();
    if let Some(e) = epoch {
        meta.mtime = meta.mtime.min(e);
    }
    meta
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::config::History;

    #[test]
    fn labels_and_epoch_apply_to_the_final_config() {
        let mut config = ImageConfig::default();
        config.config.labels = Some([("a".to_string(), "df".to_string())].into());
        config.history.push(History {
            created: Some("2020-01-01T00:00:00Z".into()),
            created_by: None,
            author: None,
            comment: None,
            empty_layer: false,
        });
        let opts = BuildOptions {
            labels: vec![("a".into(), "cli".into()), ("b".into(), "2".into())],
            source_date_epoch: Some(0),
            ..Default::default()
        };
        apply(&mut config, &opts, "1970-01-01T00:00:00Z", 0);
        let labels = config.config.labels.unwrap();
        assert_eq!(labels["a"], "cli");
        assert_eq!(labels["b"], "2");
        assert_eq!(config.history[0].created.as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(config.created.as_deref(), Some("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn the_epoch_keeps_the_base_history_and_clamps_the_rest() {
        let entry = |created: Option<&str>| History {
            created: created.map(str::to_string),
            created_by: None,
            author: None,
            comment: None,
            empty_layer: false,
        };
        // Two base entries, one later than the epoch; then this build's.
        let history = vec![
            entry(Some("2030-01-01T00:00:00Z")),
            entry(None),
            entry(Some("2030-01-01T00:00:00Z")),
            entry(Some("2001-01-01T00:00:00Z")),
            entry(None),
            entry(Some("2023-11-14T22:13:20.5Z")),
        ];
        let mut config = ImageConfig { history, ..Default::default() };
        let opts = BuildOptions { source_date_epoch: Some(1_700_000_000), ..Default::default() };
        let epoch = "2023-11-14T22:13:20Z";
        apply(&mut config, &opts, epoch, 2);
        let created: Vec<Option<&str>> = config.history.iter().map(|h| h.created.as_deref()).collect();
        assert_eq!(
            created,
            [Some("2030-01-01T00:00:00Z"), None, Some(epoch), Some("2001-01-01T00:00:00Z"), Some(epoch), Some(epoch)]
        );
        assert_eq!(config.created.as_deref(), Some(epoch));
    }

    #[test]
    fn scoping_is_idempotent() {
        let mut s = StageState::new(ImageConfig::default(), Vec::new());
        s.key = "scratch".into();
        let opts = BuildOptions { source_date_epoch: Some(5), layers: false, ..Default::default() };
        scope_key(&mut s, &opts);
        let once = s.key.clone();
        scope_key(&mut s, &opts);
        assert_eq!(s.key, once);
        assert_ne!(once, "scratch");
    }
}
