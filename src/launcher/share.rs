//! What a run does about its node (issue 13), in the terms the run loop speaks: join the
//! node's measurement before any source is opened, add the followers' CPU time to each
//! usage window, share each window's attributed energy among the ranks, keep the
//! sampling loop going while followers run, and say it all in the summary.

use std::cell::RefCell;
use std::os::fd::RawFd;

use super::node::{self, Follower, Joined, Leader};
use super::{Launcher, LauncherReport, MeasuredBy, NodeIdentity, Role};
use crate::plan::RunPlan;
use crate::report::Mode;
use crate::run::DriveHooks;

enum Part {
    Leader(RefCell<Leader>),
    Follower(RefCell<Follower>),
    /// Measuring the node by itself: why.
    Alone(String),
}

/// A follower's sampling interval when its leader reads its cgroup, ms.
pub const FOLLOWER_CGROUP_INTERVAL_MS: u64 = 1000;

/// A launched rank's part in its node's measurement.
pub struct NodeShare {
    launcher: Launcher,
    node: NodeIdentity,
    started_unix_s: f64,
    part: Part,
}

impl NodeShare {
    /// Join the node's measurement (a rank of a launched job with a command of its own),
    /// or `None` outside a launcher. `-p` and `-a` without a command measure alone.
    pub fn join(plan: &RunPlan) -> Option<NodeShare> {
        let launcher = plan.launcher.clone()?;
        let node = NodeIdentity::current();
        let part = if plan.mode == Mode::Pid || plan.command.is_empty() {
            Part::Alone(
                "an attached process (-p) or the whole machine without a command (-a) is measured by each rank itself"
                    .to_string(),
            )
        } else {
            match node::join(
                &launcher,
                &node,
                plan.runtime_dir.as_deref(),
                node::JOIN_WAIT,
            ) {
                Joined::Leader(l) => Part::Leader(RefCell::new(l)),
                Joined::Follower(f) => Part::Follower(RefCell::new(f)),
                Joined::Alone(why) => Part::Alone(why),
            }
        };
        Some(NodeShare {
            launcher,
            node,
            started_unix_s: 0.0,
            part,
        })
    }

    /// Another rank's joulerun measures the node: this one opens no energy source.
    pub fn is_follower(&self) -> bool {
        matches!(self.part, Part::Follower(_))
    }

    /// The measurement starts now (right before the command).
    pub fn started(&mut self) {
        self.started_unix_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
    }

    /// A usage window: the leader adds the followers' CPU time per socket to `tree_d`
    /// (its own command's, on entry); a follower sends its command's cumulative CPU
    /// time `tree_now`.
    pub fn window(&self, tree_d: &mut [f64], tree_now: &[f64], now_s: f64) {
        match &self.part {
            Part::Leader(l) => {
                let mut l = l.borrow_mut();
                l.poll(now_s);
                let own: f64 = tree_d.iter().sum();
                l.take_window(own, tree_d);
            }
            Part::Follower(f) => f.borrow_mut().send_cpu(tree_now, now_s),
            Part::Alone(_) => {}
        }
    }

    /// The command runs in this cgroup: a follower tells its leader, which reads it in
    /// step with the machine's CPU time.
    pub fn tracking(&self, cgroup: &std::path::Path, now_s: f64) {
        if let Part::Follower(f) = &self.part {
            f.borrow_mut().send_track(cgroup, now_s);
        }
    }

    /// A follower whose leader reads its cgroup need not tick often: its own figures
    /// only give the split per socket. Its sampling interval, ms.
    pub fn interval_ms(&self, plan_ms: u64, cgroup: bool) -> u64 {
        match &self.part {
            Part::Follower(_) if cgroup => plan_ms.max(FOLLOWER_CGROUP_INTERVAL_MS),
            _ => plan_ms,
        }
    }

    /// After the window's attribution: the command's dynamic and static energy so far.
    pub fn attributed(&self, dynamic_j: f64, static_j: f64) {
        if let Part::Leader(l) = &self.part {
            l.borrow_mut().split(dynamic_j, static_j);
        }
    }

    /// The run is over: a follower sends its final figures, a leader closes the
    /// rendezvous. Returns the summary's section and the warnings to add.
    pub fn finish(
        self,
        attributed: bool,
        end_s: f64,
        exit_status: Option<i32>,
        tree_now: &[f64],
    ) -> (LauncherReport, Vec<String>) {
        let cpu_s: f64 = tree_now.iter().sum();
        let mut warnings = Vec::new();
        let mut report = LauncherReport {
            context: self.launcher,
            node: self.node,
            started_unix_s: self.started_unix_s,
            role: Role::Node,
            shared: false,
            note: None,
            measured_by: None,
            cpu_s,
            ranks: Vec::new(),
        };
        match self.part {
            Part::Leader(l) => {
                let (mut ranks, w) = l.into_inner().finish(attributed, end_s);
                if let Some(own) = ranks.first_mut() {
                    own.exit_status = exit_status;
                    own.cpu_s = cpu_s;
                }
                warnings.extend(w);
                report.shared = true;
                report.ranks = ranks;
            }
            Part::Follower(f) => {
                let mut f = f.into_inner();
                f.finish(exit_status.unwrap_or(0), tree_now, end_s);
                let by = f.leader.clone();
                if let Some((t, why)) = &f.lost {
                    warnings.push(format!(
                        "this rank lost its node's leader (joulerun PID {}) at {t:.2} s ({why}): its CPU time after that is in no node's report",
                        by.pid
                    ));
                }
                warnings.push(follower_note(&by));
                report.role = Role::Rank;
                report.shared = true;
                report.measured_by = Some(by);
            }
            Part::Alone(why) => {
                warnings.push(format!(
                    "this rank measured its node by itself: {why}; if other ranks of the node did too, `joulerun merge` keeps one of their readings"
                ));
                report.note = Some(why);
                report.ranks = vec![super::RankShare {
                    rank: report.context.rank,
                    local_rank: report.context.local_rank,
                    step: report.context.step.clone(),
                    pid: std::process::id(),
                    cpu_s,
                    command_dynamic_j: None,
                    command_static_j: None,
                    command_j: None,
                    joined_s: 0.0,
                    left_s: Some(end_s),
                    exit_status,
                    complete: true,
                }];
            }
        }
        (report, warnings)
    }
}

/// What a follower's report says about its energy.
pub fn follower_note(by: &MeasuredBy) -> String {
    format!(
        "this node's devices were measured once, by {} (joulerun PID {}): this rank's energy and share are in that rank's report; combine the ranks' files with `joulerun merge`",
        by.rank
            .map_or("another rank".to_string(), |r| format!("rank {r}")),
        by.pid
    )
}

impl DriveHooks for NodeShare {
    fn wake_fd(&self) -> Option<RawFd> {
        match &self.part {
            Part::Leader(l) => l.borrow().fd(),
            _ => None,
        }
    }

    fn woke(&self, now_s: f64) {
        if let Part::Leader(l) = &self.part {
            l.borrow_mut().accept(now_s);
        }
    }

    fn hold(&self, now_s: f64) -> bool {
        match &self.part {
            Part::Leader(l) => l.borrow_mut().hold(now_s),
            _ => false,
        }
    }
}
