//! The listing `kiln build --check` prints: the needed stages in build order,
//! each followed by its steps numbered across the whole build the way
//! buildah and docker number them (a FROM line is a step).

use std::fmt;

use super::types::{Base, BuildPlan, Stage};

impl fmt::Display for BuildPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stages: Vec<&Stage> = self.needed.iter().filter_map(|&i| self.stages.get(i)).collect();
        let total: usize = stages.iter().map(|s| s.steps.len() + 1).sum();
        let mut number = 0;
        for stage in stages {
            writeln!(f, "{} ({})", self.stage_label(stage.index), self.describe_base(stage))?;
            number += 1;
            writeln!(f, "STEP {number}/{total}: {}", stage.original)?;
            for step in &stage.steps {
                number += 1;
                writeln!(f, "STEP {number}/{total}: {}", step.original)?;
            }
        }
        writeln!(f, "target: {}", self.stage_label(self.target))?;
        if !self.unused_build_args.is_empty() {
            writeln!(f, "warning: build args not consumed by any needed stage: {}", self.unused_build_args.join(", "))?;
        }
        Ok(())
    }
}

impl BuildPlan {
    /// `stage 2 "test"` or `stage 2`.
    fn stage_label(&self, index: usize) -> String {
        match self.stages.get(index).and_then(|s| s.name.as_deref()) {
            Some(name) => format!("stage {index} {name:?}"),
            None => format!("stage {index}"),
        }
    }

    fn describe_base(&self, stage: &Stage) -> String {
        let base = match &stage.base {
            Base::Scratch => "from scratch".to_string(),
            Base::Stage(parent) => format!("from {}", self.stage_label(*parent)),
            Base::Image(image) => format!("from image {image}"),
        };
        match &stage.platform {
            Some(platform) => format!("{base}, platform {platform}"),
            None => base,
        }
    }
}
