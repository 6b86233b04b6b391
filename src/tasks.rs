//! Transformation tasks: the CDN processing API's task names, the read-only ones a route allows by
//! default, and a route's `tasks` allowlist.
//!
//! A signature handed out for one URL lets its holder run any transformation the policy's calls
//! allow, on that file, until it expires. So what a client may ask signgate to sign is limited by
//! name: tasks that only change how the one file is delivered are allowed by default; tasks that
//! write (`store`), read other files or URLs (`collage`, `watermark`, `zip`, `fallback`,
//! `urlscreenshot`), or run billed analyses (`ocr`, `tags`) are signed only where a route lists
//! them.

use std::fmt;

/// Read-only transformations of the one file: allowed when a route sets no `tasks`.
pub const DEFAULT_TASKS: &[&str] = &[
    "resize",
    "crop",
    "rotate",
    "flip",
    "flop",
    "output",
    "quality",
    "compress",
    "auto_image",
    "no_metadata",
    "pjpg",
    "enhance",
    "redeye",
    "upscale",
    "blur",
    "sharpen",
    "monochrome",
    "blackwhite",
    "sepia",
    "negative",
    "pixelate",
    "oil_paint",
    "modulate",
    "ascii",
    "circle",
    "border",
    "rounded_corners",
    "vignette",
    "polaroid",
    "torn_edges",
    "shadow",
    "partial_blur",
    "partial_pixelate",
    "detect_faces",
    "crop_faces",
    "pixelate_faces",
    "blur_faces",
    "smart_crop",
    "pdfconvert",
];

/// Tasks the CDN knows that are signed only where a route lists them, each with why.
pub const LISTED_ONLY_TASKS: &[(&str, &str)] = &[
    ("store", "writes a copy to storage"),
    ("video_convert", "writes a transcoded copy"),
    ("doc_to_images", "writes a copy per page"),
    ("collage", "reads other files"),
    ("watermark", "reads another file"),
    ("zip", "reads other files"),
    ("animate", "reads other files"),
    ("fallback", "names another file"),
    ("urlscreenshot", "fetches a URL"),
    ("cache", "can turn the CDN's cache off"),
    ("debug", "answers processing details instead of the file"),
    ("imagesize", "answers metadata instead of the file"),
    ("pdfinfo", "answers metadata instead of the file"),
    ("minify_js", "transforms code"),
    ("minify_css", "transforms code"),
    ("tags", "runs a billed analysis"),
    ("sfw", "runs a billed analysis"),
    ("ocr", "runs a billed analysis"),
    ("caption", "runs a billed analysis"),
    ("copyright", "runs a billed analysis"),
    ("doc_detection", "runs a billed analysis"),
];

/// The name of a task segment: what comes before `=` (`resize` in `resize=width:300`).
pub fn task_name(task: &str) -> &str {
    task.split_once('=').map_or(task, |(name, _)| name)
}

/// `name` as the CDN's processing API spells it, if it knows the task.
fn known(name: &str) -> Option<&'static str> {
    DEFAULT_TASKS
        .iter()
        .copied()
        .chain(LISTED_ONLY_TASKS.iter().map(|(n, _)| *n))
        .find(|known| *known == name)
}

/// A route's `tasks`: the transformation task names a file URL may carry to be signed.
#[derive(Clone, PartialEq, Eq)]
pub struct TaskAllowlist {
    names: Vec<&'static str>,
}

impl Default for TaskAllowlist {
    /// [`DEFAULT_TASKS`].
    fn default() -> Self {
        Self {
            names: DEFAULT_TASKS.to_vec(),
        }
    }
}

impl fmt::Debug for TaskAllowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.names).finish()
    }
}

impl TaskAllowlist {
    /// The allowlist `names` spells; every name must be one the CDN knows.
    pub fn parse(names: &[String]) -> Result<Self, String> {
        let mut allowed: Vec<&'static str> = Vec::with_capacity(names.len());
        for name in names {
            let known = known(name).ok_or_else(|| {
                format!(
                    "unknown task {name:?}: expected names of the CDN's processing tasks, \
                         such as \"resize\", \"crop\", \"output\" or \"store\" (without \
                         parameters)"
                )
            })?;
            if !allowed.contains(&known) {
                allowed.push(known);
            }
        }
        Ok(Self { names: allowed })
    }

    /// No task at all: a verify route's default.
    pub fn none() -> Self {
        Self { names: Vec::new() }
    }

    /// Whether a task segment (`resize=width:300`) may be signed. Names are compared exactly:
    /// the CDN spells them in lowercase.
    pub fn allows(&self, task: &str) -> bool {
        self.names.contains(&task_name(task))
    }

    /// The first of `tasks` that may not be signed, if any.
    pub fn first_refused<'t>(&self, tasks: &[&'t str]) -> Option<&'t str> {
        tasks.iter().copied().find(|task| !self.allows(task))
    }

    /// The allowed names.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_allows_read_only_transformations_only() {
        let tasks = TaskAllowlist::default();
        for allowed in [
            "resize=width:300",
            "flip",
            "output=format:webp",
            "rounded_corners",
        ] {
            assert!(tasks.allows(allowed), "{allowed}");
        }
        for refused in [
            "store",
            "store=location:s3",
            "collage=files:[a],width:9,height:9",
            "watermark=file:AAAAAAAAAAAAAAAAAAAA",
            "zip",
            "fallback=handle:AAAAAAAAAAAAAAAAAAAA",
            "urlscreenshot",
            "RESIZE=width:3",
            "nonsense",
        ] {
            assert!(!tasks.allows(refused), "{refused}");
        }
        assert_eq!(
            tasks.first_refused(&["resize=w:1", "store", "zip"]),
            Some("store")
        );
        assert_eq!(tasks.first_refused(&["resize=w:1"]), None);
    }

    #[test]
    fn a_listed_task_is_allowed_and_only_listed_ones_are() {
        let tasks = TaskAllowlist::parse(&["store".into(), "resize".into(), "store".into()])
            .expect("known names");
        assert_eq!(tasks.names(), ["store", "resize"]);
        assert!(tasks.allows("store=location:s3"));
        assert!(!tasks.allows("crop=dim:[0,0,9,9]"));
        assert!(
            TaskAllowlist::parse(&[])
                .expect("empty")
                .first_refused(&["flip"])
                .is_some()
        );
    }

    #[test]
    fn unknown_names_are_refused_saying_what_is_expected() {
        let error = TaskAllowlist::parse(&["resise".into()]).expect_err("unknown");
        assert!(
            error.contains("\"resise\"") && error.contains("\"resize\""),
            "{error}"
        );
        assert!(TaskAllowlist::parse(&["resize=width:3".into()]).is_err());
    }

    #[test]
    fn every_task_is_in_one_list_only() {
        for (name, _) in LISTED_ONLY_TASKS {
            assert!(!DEFAULT_TASKS.contains(name), "{name}");
            assert_eq!(known(name), Some(*name));
        }
        let mut all: Vec<&str> = DEFAULT_TASKS.to_vec();
        all.extend(LISTED_ONLY_TASKS.iter().map(|(n, _)| *n));
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count, "a name is listed twice");
    }
}
