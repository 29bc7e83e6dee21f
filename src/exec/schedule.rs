//! When stages run: each needed stage starts once the stages it reads are
//! done, up to `--jobs` at a time, and a stage's state is dropped once
//! nothing left reads it.

use super::*;

impl<'a> Executor<'a> {
    /// Runs every needed stage once the stages it depends on are done, at
    /// most `jobs` at a time. The first failure stops new stages from
    /// starting; running ones finish, then the failure is returned.
    pub(super) fn schedule(&self) -> Result<(), ExecError> {
        let needed = &self.plan.needed;
        let total = needed.len();
        let jobs = self.opts.jobs.max(1);
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<StageState, ExecError>)>();
        // Readiness is counted, not searched for: scanning every stage for
        // ready ones after each finished stage made a Dockerfile of
        // thousands of stages take cubic time to schedule.
        let count = self.plan.stages.len();
        let mut position = vec![usize::MAX; count];
        needed.iter().enumerate().for_each(|(n, &i)| position[i] = n);
        // For each stage, the needed stages it waits for, and who waits for it.
        let mut waiting = vec![0usize; count];
        let mut waiters: Vec<Vec<usize>> = vec![Vec::new(); count];
        for &i in needed {
            for &d in self.plan.stages[i].deps.iter().filter(|&&d| position[d] != usize::MAX) {
                waiting[i] += 1;
                waiters[d].push(i);
            }
        }
        // Ready stages by position in `needed`: the earliest starts first.
        let mut ready: std::collections::BTreeSet<usize> =
            needed.iter().filter(|&&i| waiting[i] == 0).map(|&i| position[i]).collect();
        let (mut started, mut finished) = (0usize, 0usize);
        // How many needed stages read each stage and have not finished.
        let mut readers = self.readers.clone();
        let mut failure: Option<ExecError> = None;
        std::thread::scope(|scope| loop {
            while failure.is_none() && started - finished < jobs {
                let Some(n) = ready.pop_first() else { break };
                let index = needed[n];
                let stage = &self.plan.stages[index];
                started += 1;
                let position = (total > 1).then_some((n + 1, total));
                let tx = tx.clone();
                scope.spawn(move || {
                    let _ = tx.send((index, self.stage(stage, position)));
                });
            }
            if started == finished {
                break;
            }
            let Ok((index, result)) = rx.recv() else { break };
            finished += 1;
            if result.is_ok() {
                for &w in &waiters[index] {
                    waiting[w] -= 1;
                    if waiting[w] == 0 {
                        ready.insert(position[w]);
                    }
                }
            }
            match result {
                Ok(state) => {
                    let mut done = self.done.lock().expect("done lock");
                    done.insert(index, state);
                    // A stage's state is dropped once every stage that reads
                    // it is done: a chain of thousands of stages would
                    // otherwise keep thousands of configs (16 GB for 10,000).
                    for &d in &self.plan.stages[index].deps {
                        readers[d] = readers[d].saturating_sub(1);
                        if readers[d] == 0 && d != self.plan.target {
                            done.remove(&d);
                        }
                    }
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        });
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// For each stage, how many of the needed stages read it.
pub(super) fn readers(plan: &BuildPlan) -> Vec<usize> {
    let mut readers = vec![0usize; plan.stages.len()];
    for &i in &plan.needed {
        plan.stages[i].deps.iter().for_each(|&d| readers[d] += 1);
    }
    readers
}
