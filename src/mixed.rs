//! Pipelines whose stages are on different machines: `local | remote | local`.
//!
//! The stages are cut into *segments* of consecutive stages on one machine; each machine
//! starts its segment as usual (a local segment with OS pipes, a remote one as one command
//! line), and the bytes between segments stream through this process: a task per
//! boundary copies one segment's stdout into the next one's stdin, with back-pressure in
//! both directions (it reads only as fast as it can write).
//!
//! When a downstream segment ends, nothing will read what its upstream segment still
//! writes (`remote yes | local head -1`, `local yes | remote head -1`): like a shell's
//! writer, the upstream segment then gets SIGPIPE, which is not a failure for a stage that
//! is not last. A write into a remote stdin whose process is gone does not fail (it waits
//! for window that never comes), so this is decided by the segments' ends, not by the copy.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::oneshot,
};

use crate::{
    ExitStatus, Result, Signal,
    machine::{
        BoxWrite, MachineRef, Plan, ReadEnd, Running, StagePlan, StderrPlan, StdinPlan, StdoutPlan,
    },
};

/// The segments of `plan`, each with its machine and whether it reads the previous
/// segment's output, wired to stream through this process.
fn segments(plan: Plan) -> Vec<(MachineRef, Plan, bool)> {
    let mut segments: Vec<(MachineRef, Plan)> = Vec::new();
    for stage in plan.stages {
        let machine = stage.command.spec().machine.clone();
        match segments.last_mut() {
            Some((last, segment)) if Arc::ptr_eq(last, &machine) => segment.stages.push(stage),
            _ => segments.push((
                machine,
                Plan {
                    stages: vec![stage],
                    detached: false,
                },
            )),
        }
    }
    let count = segments.len();
    let mut bridged = vec![false; count];
    for k in 0..count {
        let last_segment = k + 1 == count;
        let (_, segment) = &mut segments[k];
        if k > 0 {
            let first: &mut StagePlan = &mut segment.stages[0];
            if first.stdin == StdinPlan::Previous {
                first.stdin = StdinPlan::Pipe;
                bridged[k] = true;
            }
        }
        let ends_in_pipe = {
            let last = segment.stages.last_mut().expect("a segment has a stage");
            let next = last.stdout == StdoutPlan::Next;
            if next {
                last.stdout = StdoutPlan::Pipe;
            }
            next
        };
        for stage in &mut segment.stages {
            // `(a | b) 2>&1` across machines: the stderr of stages before the last segment
            // cannot reach its stdout; it is kept for the error instead.
            if !last_segment && stage.stderr == StderrPlan::PipelineStdout {
                stage.stderr = StderrPlan::Pipe;
            }
        }
        // A segment whose output went elsewhere gives the next one an empty stdin.
        if !last_segment && !ends_in_pipe {
            let (_, next) = &mut segments[k + 1];
            if next.stages[0].stdin == StdinPlan::Previous {
                next.stages[0].stdin = StdinPlan::Null;
            }
        }
    }
    segments
        .into_iter()
        .zip(bridged)
        .map(|((machine, plan), bridged)| (machine, plan, bridged))
        .collect()
}

/// Starts every segment and the copies between them.
pub(crate) async fn start(plan: Plan) -> Result<Box<dyn Running>> {
    let mut parts: Vec<(usize, Box<dyn Running>)> = Vec::new();
    let mut bridged = Vec::new();
    let mut first_stage = 0;
    for (machine, segment, reads_previous) in segments(plan) {
        let stages = segment.stages.len();
        // On error the parts started so far are dropped, which kills them.
        let running = machine.start(segment).await?;
        parts.push((first_stage, running));
        bridged.push(reads_previous);
        first_stage += stages;
    }
    let mut mixed = Mixed {
        bridges: (0..parts.len()).map(|_| None).collect(),
        parts,
        bridged,
    };
    for k in 1..mixed.parts.len() {
        // An upstream output nobody reads is dropped: a local writer gets EPIPE, as in
        // a shell (`a | b < file`).
        let upstream = mixed.parts[k - 1].1.take_stdout();
        if !mixed.bridged[k] {
            continue;
        }
        let downstream = mixed.parts[k].1.take_stdin(0);
        if let (Some(upstream), Some(downstream)) = (upstream, downstream) {
            let (tell, told) = oneshot::channel();
            let task = tokio::spawn(bridge(upstream, downstream, tell));
            mixed.bridges[k - 1] = Some((told, task));
        }
    }
    Ok(Box::new(mixed))
}

/// Copies one segment's stdout into the next one's stdin; says whether the downstream side
/// stopped reading first.
async fn bridge(upstream: ReadEnd, mut downstream: BoxWrite, tell: oneshot::Sender<bool>) {
    let Ok(mut upstream) = upstream.into_async() else {
        let _ = tell.send(true);
        return;
    };
    let mut chunk = vec![0; 256 * 1024];
    let mut downstream_gone = false;
    loop {
        let n = match upstream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if downstream.write_all(&chunk[..n]).await.is_err() {
            downstream_gone = true;
            break;
        }
    }
    let _ = downstream.shutdown().await;
    let _ = tell.send(downstream_gone);
}

struct Mixed {
    /// Each part with the index of its first stage in the whole pipeline.
    parts: Vec<(usize, Box<dyn Running>)>,
    /// Per part: the copy of its stdout into the next part, and its news (whether the next
    /// part stopped reading).
    bridges: Vec<Option<(oneshot::Receiver<bool>, tokio::task::JoinHandle<()>)>>,
    /// Per part: whether its first stage reads the previous part's output.
    bridged: Vec<bool>,
}

impl Mixed {
    /// The part holding `stage`, its index there, and whether that part is bridged.
    fn part_of(&mut self, stage: usize) -> Option<(&mut Box<dyn Running>, usize, bool)> {
        let part = self.parts.iter().rposition(|(first, _)| *first <= stage)?;
        let bridged = self.bridged[part];
        let (first, running) = &mut self.parts[part];
        Some((running, stage - *first, bridged))
    }
}

impl Running for Mixed {
    fn take_stdin(&mut self, stage: usize) -> Option<BoxWrite> {
        let (running, index, bridged) = self.part_of(stage)?;
        // A bridged part's first stdin belongs to its bridge.
        if index == 0 && bridged {
            None
        } else {
            running.take_stdin(index)
        }
    }

    fn take_stdout(&mut self) -> Option<ReadEnd> {
        self.parts.last_mut()?.1.take_stdout()
    }

    fn take_stderr(&mut self, stage: usize) -> Option<ReadEnd> {
        let (running, index, _) = self.part_of(stage)?;
        running.take_stderr(index)
    }

    fn wait(&mut self) -> BoxFuture<'_, Result<Vec<ExitStatus>>> {
        Box::pin(async move {
            // From the last part back: once part k + 1 has ended, what part k still writes
            // has no reader.
            let mut statuses = vec![Vec::new(); self.parts.len()];
            for k in (0..self.parts.len()).rev() {
                if let Some((mut told, task)) = self.bridges[k].take() {
                    let finished_cleanly = matches!(told.try_recv(), Ok(false));
                    if !finished_cleanly {
                        task.abort();
                        self.parts[k].1.signal(Signal::PIPE)?;
                    }
                }
                statuses[k] = self.parts[k].1.wait().await?;
            }
            Ok(statuses.concat())
        })
    }

    fn signal(&mut self, signal: Signal) -> Result<()> {
        for (_, running) in &mut self.parts {
            running.signal(signal)?;
        }
        Ok(())
    }

    fn id(&self) -> Option<u32> {
        self.parts.first()?.1.id()
    }
}
