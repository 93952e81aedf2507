//! The dispatcher: workers connect over TCP and announce their capacity; it
//! keeps the agent's task queue, assigns queued tasks FIFO to workers with
//! free slots, and retries the tasks of a worker that disconnects.
//!
//! [`listen`] turns sockets into [`WorkerEvent`]s; [`Dispatcher`] is the
//! state those events drive, with no I/O of its own beyond queuing frames to
//! a worker's writer task.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lattice_protocol::frames::{
    DispatcherFrame, OutcomeStatus, TaskAssignment, TaskOutcome, TaskStarted, WorkerFrame,
};
use lattice_protocol::{TaskId, WorkerId};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::wire::{read_frame, write_frame};
use crate::worker::CANCELLED;

/// A worker must say hello this soon after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// One worker connection (ids are never reused within an agent).
pub(crate) type ConnId = u64;

/// What a worker announced.
#[derive(Clone, Debug)]
pub(crate) struct WorkerHello {
    pub(crate) worker_id: WorkerId,
    pub(crate) capacity: u32,
    pub(crate) hostname: String,
    pub(crate) pid: u32,
    pub(crate) block_id: Option<String>,
}

/// Workers and running tasks of one scheduler block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BlockLoad {
    pub(crate) workers: u32,
    pub(crate) running_tasks: u32,
}

/// What happened on the worker sockets.
#[derive(Debug)]
pub(crate) enum WorkerEvent {
    Connected {
        conn: ConnId,
        hello: WorkerHello,
        sender: mpsc::UnboundedSender<DispatcherFrame>,
    },
    Frame {
        conn: ConnId,
        frame: WorkerFrame,
    },
    Disconnected {
        conn: ConnId,
        reason: String,
    },
}

/// Listens for workers; returns the bound address, the event stream and the
/// accept task (abort it to stop accepting).
pub(crate) async fn listen(
    address: SocketAddr,
) -> std::io::Result<(
    SocketAddr,
    mpsc::UnboundedReceiver<WorkerEvent>,
    JoinHandle<()>,
)> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let (events, receiver) = mpsc::unbounded_channel();
    let acceptor = tokio::spawn(async move {
        let mut next_conn: ConnId = 0;
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    next_conn += 1;
                    tokio::spawn(serve_worker(next_conn, stream, peer, events.clone()));
                }
                Err(e) => {
                    tracing::warn!("dispatcher cannot accept a worker: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            if events.is_closed() {
                return;
            }
        }
    });
    Ok((bound, receiver, acceptor))
}

pub(crate) async fn serve_worker(
    conn: ConnId,
    stream: TcpStream,
    peer: SocketAddr,
    events: mpsc::UnboundedSender<WorkerEvent>,
) {
    let _ = stream.set_nodelay(true);
    let (read_half, mut write_half) = stream.into_split();
    let mut reader = BufReader::new(read_half);
    let hello =
        match tokio::time::timeout(HELLO_TIMEOUT, read_frame::<WorkerFrame>(&mut reader)).await {
            Ok(Ok(Some(WorkerFrame::Hello {
                worker_id,
                capacity,
                hostname,
                pid,
                block_id,
            }))) => WorkerHello {
                worker_id,
                capacity,
                hostname,
                pid,
                block_id,
            },
            Ok(Ok(Some(_))) => {
                tracing::warn!(%peer, "worker sent another frame before its hello; closing");
                return;
            }
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::warn!(%peer, "worker hello failed: {e}");
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, "worker sent no hello within {HELLO_TIMEOUT:?}; closing");
                return;
            }
        };
    let (sender, mut outgoing) = mpsc::unbounded_channel::<DispatcherFrame>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if let Err(e) = write_frame(&mut write_half, &frame).await {
                tracing::debug!("cannot write to worker: {e}");
                return;
            }
        }
        // The dispatcher let go of this worker: close our side.
        let _ = write_half.shutdown().await;
    });
    if events
        .send(WorkerEvent::Connected {
            conn,
            hello,
            sender,
        })
        .is_err()
    {
        return;
    }
    let reason = loop {
        match read_frame::<WorkerFrame>(&mut reader).await {
            Ok(Some(frame)) => {
                if events.send(WorkerEvent::Frame { conn, frame }).is_err() {
                    return;
                }
            }
            Ok(None) => break "closed the connection".to_owned(),
            Err(e) => break e.to_string(),
        }
    };
    let _ = events.send(WorkerEvent::Disconnected { conn, reason });
    writer.abort();
}

struct Worker {
    hello: WorkerHello,
    sender: mpsc::UnboundedSender<DispatcherFrame>,
    tasks: HashSet<TaskId>,
    shutting_down: bool,
}

impl Worker {
    fn free(&self) -> u32 {
        if self.shutting_down {
            return 0;
        }
        self.hello.capacity.saturating_sub(self.tasks.len() as u32)
    }

    fn name(&self) -> String {
        format!("{}:{}", self.hello.hostname, self.hello.pid)
    }
}

struct Running {
    conn: ConnId,
    task: TaskAssignment,
    cancelled: bool,
}

/// The agent's tasks and workers.
#[derive(Default)]
pub(crate) struct Dispatcher {
    queue: VecDeque<TaskAssignment>,
    workers: BTreeMap<ConnId, Worker>,
    running: HashMap<TaskId, Running>,
}

impl Dispatcher {
    /// Whether the task is queued or running here.
    pub(crate) fn holds(&self, task_id: TaskId) -> bool {
        self.running.contains_key(&task_id) || self.queue.iter().any(|t| t.task_id == task_id)
    }

    /// Tasks queued or running.
    pub(crate) fn held(&self) -> u32 {
        (self.queue.len() + self.running.len()) as u32
    }

    pub(crate) fn queue_depth(&self) -> u32 {
        self.queue.len() as u32
    }

    pub(crate) fn running(&self) -> u32 {
        self.running.len() as u32
    }

    pub(crate) fn workers(&self) -> u32 {
        self.workers.len() as u32
    }

    /// Task slots of connected workers.
    pub(crate) fn slots(&self) -> u32 {
        self.workers.values().map(|w| w.hello.capacity).sum()
    }

    pub(crate) fn idle_slots(&self) -> u32 {
        self.workers.values().map(Worker::free).sum()
    }

    /// Per scheduler block (as workers announced it): connected workers and
    /// the tasks running on them.
    pub(crate) fn block_load(&self) -> HashMap<String, BlockLoad> {
        let mut load: HashMap<String, BlockLoad> = HashMap::new();
        for worker in self.workers.values() {
            if let Some(block) = &worker.hello.block_id {
                let entry = load.entry(block.clone()).or_default();
                entry.workers += 1;
                entry.running_tasks += worker.tasks.len() as u32;
            }
        }
        load
    }

    /// Queues a task; `false` (and nothing queued) if it is already here.
    pub(crate) fn enqueue(&mut self, task: TaskAssignment) -> bool {
        if self.holds(task.task_id) {
            return false;
        }
        self.queue.push_back(task);
        true
    }

    pub(crate) fn connect(
        &mut self,
        conn: ConnId,
        hello: WorkerHello,
        sender: mpsc::UnboundedSender<DispatcherFrame>,
    ) {
        tracing::info!(worker_id = %hello.worker_id, host = %hello.hostname, pid = hello.pid, capacity = hello.capacity, block_id = ?hello.block_id, "worker connected");
        self.workers.insert(
            conn,
            Worker {
                hello,
                sender,
                tasks: HashSet::new(),
                shutting_down: false,
            },
        );
    }

    /// A worker is gone. Its tasks are queued again (first in line) with the
    /// next attempt number while retries remain; the others are returned as
    /// final `worker lost` failures.
    pub(crate) fn disconnect(&mut self, conn: ConnId, reason: &str) -> Vec<TaskOutcome> {
        let Some(worker) = self.workers.remove(&conn) else {
            return Vec::new();
        };
        let mut lost: Vec<TaskAssignment> = worker
            .tasks
            .iter()
            .filter_map(|id| self.running.remove(id))
            .filter(|r| !r.cancelled)
            .map(|r| r.task)
            .collect();
        if lost.is_empty() {
            tracing::info!(worker_id = %worker.hello.worker_id, "worker disconnected: {reason}");
            return Vec::new();
        }
        tracing::warn!(worker_id = %worker.hello.worker_id, host = %worker.hello.hostname, tasks = lost.len(), "worker lost while running tasks: {reason}");
        lost.sort_by_key(|t| t.task_id);
        let mut failures = Vec::new();
        let now = Utc::now();
        for mut task in lost.into_iter().rev() {
            if task.attempt <= task.max_retries {
                task.attempt += 1;
                tracing::info!(task_id = %task.task_id, attempt = task.attempt, "retrying a task whose worker was lost");
                self.queue.push_front(task);
            } else {
                failures.push(TaskOutcome {
                    task_id: task.task_id,
                    attempt: task.attempt,
                    status: OutcomeStatus::Failed,
                    result: None,
                    error: Some(format!(
                        "worker lost: worker {} on {} disconnected while running the task (after {} attempts)",
                        worker.hello.worker_id, worker.hello.hostname, task.attempt
                    )),
                    worker: Some(worker.name()),
                    started_at: None,
                    finished_at: now,
                });
            }
        }
        failures
    }

    /// A worker started a task: what to tell the service, if anything.
    pub(crate) fn started(
        &mut self,
        conn: ConnId,
        task_id: TaskId,
        at: DateTime<Utc>,
    ) -> Option<TaskStarted> {
        let running = self.running.get(&task_id)?;
        if running.conn != conn || running.cancelled {
            return None;
        }
        Some(TaskStarted {
            task_id,
            worker: self.workers.get(&conn)?.name(),
            at,
        })
    }

    /// A worker finished a task: the outcome to report, unless the task was
    /// cancelled (or is not this worker's).
    pub(crate) fn finished(
        &mut self,
        conn: ConnId,
        mut outcome: TaskOutcome,
    ) -> Option<TaskOutcome> {
        let running = self.running.get(&outcome.task_id)?;
        if running.conn != conn {
            return None;
        }
        let running = self.running.remove(&outcome.task_id)?;
        let worker = self.workers.get_mut(&conn)?;
        worker.tasks.remove(&outcome.task_id);
        if running.cancelled {
            return None;
        }
        if outcome.error.as_deref() == Some(CANCELLED) && outcome.result.is_none() {
            // The worker killed it on its own (it is stopping): run it elsewhere.
            let mut task = running.task;
            task.attempt = task.attempt.max(outcome.attempt);
            self.queue.push_front(task);
            return None;
        }
        if outcome.worker.is_none() {
            outcome.worker = Some(worker.name());
        }
        Some(outcome)
    }

    /// Drops queued tasks and asks workers to kill running ones (which then
    /// report nothing).
    pub(crate) fn cancel(&mut self, task_ids: &[TaskId]) {
        let ids: HashSet<TaskId> = task_ids.iter().copied().collect();
        self.queue.retain(|t| !ids.contains(&t.task_id));
        for id in ids {
            if let Some(running) = self.running.get_mut(&id) {
                if !running.cancelled {
                    running.cancelled = true;
                    if let Some(worker) = self.workers.get(&running.conn) {
                        let _ = worker.sender.send(DispatcherFrame::Cancel { task_id: id });
                    }
                }
            }
        }
    }

    /// Hands queued tasks, oldest first, to the workers with the most free slots.
    pub(crate) fn assign(&mut self) {
        while !self.queue.is_empty() {
            let Some((&conn, worker)) = self
                .workers
                .iter_mut()
                .filter(|(_, w)| w.free() > 0)
                .max_by_key(|(conn, w)| (w.free(), std::cmp::Reverse(**conn)))
            else {
                return;
            };
            let task = self.queue.pop_front().expect("queue is not empty");
            worker.tasks.insert(task.task_id);
            // A failed send means the worker is going; its disconnect retries the task.
            let _ = worker
                .sender
                .send(DispatcherFrame::Run { task: task.clone() });
            self.running.insert(
                task.task_id,
                Running {
                    conn,
                    task,
                    cancelled: false,
                },
            );
        }
    }

    /// Tells every worker to finish its tasks and exit; no more assignments.
    pub(crate) fn shutdown_workers(&mut self) {
        for worker in self.workers.values_mut() {
            if !worker.shutting_down {
                worker.shutting_down = true;
                let _ = worker.sender.send(DispatcherFrame::Shutdown);
            }
        }
    }

    /// Marks a newly connected worker as shutting down right away.
    pub(crate) fn shutdown_worker(&mut self, conn: ConnId) {
        if let Some(worker) = self.workers.get_mut(&conn) {
            worker.shutting_down = true;
            let _ = worker.sender.send(DispatcherFrame::Shutdown);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lattice_protocol::compute::FunctionSpec;
    use lattice_protocol::FunctionId;
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

    pub(crate) fn shell_task(command: &str, max_retries: u32) -> TaskAssignment {
        TaskAssignment {
            task_id: TaskId::new(),
            function_id: FunctionId::new(),
            spec: FunctionSpec::Shell {
                command: command.to_owned(),
            },
            args: Default::default(),
            walltime_secs: 30,
            attempt: 1,
            max_retries,
            submitter: None,
            user_config: None,
        }
    }

    /// A fake worker speaking the real frames over loopback TCP.
    struct FakeWorker {
        reader: BufReader<OwnedReadHalf>,
        writer: OwnedWriteHalf,
    }

    impl FakeWorker {
        async fn connect(address: SocketAddr, capacity: u32, hostname: &str) -> (Self, WorkerId) {
            let stream = TcpStream::connect(address).await.unwrap();
            let (r, mut w) = stream.into_split();
            let worker_id = WorkerId::new();
            write_frame(
                &mut w,
                &WorkerFrame::Hello {
                    worker_id,
                    capacity,
                    hostname: hostname.to_owned(),
                    pid: 4242,
                    block_id: None,
                },
            )
            .await
            .unwrap();
            (
                Self {
                    reader: BufReader::new(r),
                    writer: w,
                },
                worker_id,
            )
        }

        async fn next(&mut self) -> DispatcherFrame {
            tokio::time::timeout(Duration::from_secs(5), read_frame(&mut self.reader))
                .await
                .expect("a frame within 5 s")
                .unwrap()
                .expect("not closed")
        }

        async fn send(&mut self, frame: &WorkerFrame) {
            write_frame(&mut self.writer, frame).await.unwrap();
        }
    }

    async fn next_event(events: &mut mpsc::UnboundedReceiver<WorkerEvent>) -> WorkerEvent {
        tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an event within 5 s")
            .expect("listener alive")
    }

    /// Feeds one event to the dispatcher, returning final failures.
    fn apply(dispatcher: &mut Dispatcher, event: WorkerEvent) -> Vec<TaskOutcome> {
        match event {
            WorkerEvent::Connected {
                conn,
                hello,
                sender,
            } => {
                dispatcher.connect(conn, hello, sender);
                dispatcher.assign();
                Vec::new()
            }
            WorkerEvent::Frame { conn, frame } => match frame {
                WorkerFrame::Result { outcome } => {
                    let out = dispatcher.finished(conn, outcome).into_iter().collect();
                    dispatcher.assign();
                    out
                }
                _ => Vec::new(),
            },
            WorkerEvent::Disconnected { conn, reason } => {
                let failures = dispatcher.disconnect(conn, &reason);
                dispatcher.assign();
                failures
            }
        }
    }

    #[tokio::test]
    async fn lost_worker_tasks_are_retried_then_fail_with_worker_lost() {
        let (address, mut events, acceptor) = listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let mut dispatcher = Dispatcher::default();
        let task = shell_task("sleep 100", 1);
        assert!(dispatcher.enqueue(task.clone()));
        assert!(!dispatcher.enqueue(task.clone()), "duplicates are refused");

        // First worker gets attempt 1, then dies.
        let (mut a, _) = FakeWorker::connect(address, 1, "node-a").await;
        apply(&mut dispatcher, next_event(&mut events).await);
        let DispatcherFrame::Run { task: run } = a.next().await else {
            panic!("expected a Run")
        };
        assert_eq!((run.task_id, run.attempt), (task.task_id, 1));
        assert_eq!(dispatcher.idle_slots(), 0);
        drop(a);
        let failures = apply(&mut dispatcher, next_event(&mut events).await);
        assert!(failures.is_empty());
        assert_eq!(
            dispatcher.queue_depth(),
            1,
            "queued again for another worker"
        );
        assert!(dispatcher.holds(task.task_id));

        // Second worker gets attempt 2 (= max_retries + 1), then dies too.
        let (mut b, b_id) = FakeWorker::connect(address, 2, "node-b").await;
        apply(&mut dispatcher, next_event(&mut events).await);
        let DispatcherFrame::Run { task: run } = b.next().await else {
            panic!("expected a Run")
        };
        assert_eq!((run.task_id, run.attempt), (task.task_id, 2));
        drop(b);
        let failures = apply(&mut dispatcher, next_event(&mut events).await);
        assert_eq!(failures.len(), 1);
        let failure = &failures[0];
        assert_eq!(failure.task_id, task.task_id);
        assert_eq!(failure.status, OutcomeStatus::Failed);
        assert_eq!(failure.attempt, 2);
        assert_eq!(
            failure.error.as_deref().unwrap(),
            format!("worker lost: worker {b_id} on node-b disconnected while running the task (after 2 attempts)")
        );
        assert_eq!(dispatcher.held(), 0);
        acceptor.abort();
    }

    #[tokio::test]
    async fn assignment_is_fifo_within_capacity_and_results_free_slots() {
        let (address, mut events, acceptor) = listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let mut dispatcher = Dispatcher::default();
        let tasks: Vec<_> = (0..3).map(|_| shell_task("true", 0)).collect();
        for t in &tasks {
            dispatcher.enqueue(t.clone());
        }
        let (mut w, _) = FakeWorker::connect(address, 2, "node").await;
        apply(&mut dispatcher, next_event(&mut events).await);
        let mut got = Vec::new();
        for _ in 0..2 {
            let DispatcherFrame::Run { task } = w.next().await else {
                panic!()
            };
            got.push(task.task_id);
        }
        assert_eq!(got, vec![tasks[0].task_id, tasks[1].task_id]);
        assert_eq!(dispatcher.queue_depth(), 1);

        // A started frame is forwarded with the worker's name.
        let started = dispatcher.started(1, tasks[0].task_id, Utc::now()).unwrap();
        assert_eq!(started.worker, "node:4242");

        // Finishing one frees a slot for the third.
        let outcome = TaskOutcome {
            task_id: tasks[0].task_id,
            attempt: 1,
            status: OutcomeStatus::Success,
            result: None,
            error: None,
            worker: None,
            started_at: None,
            finished_at: Utc::now(),
        };
        w.send(&WorkerFrame::Result { outcome }).await;
        let reported = apply(&mut dispatcher, next_event(&mut events).await);
        assert_eq!(reported.len(), 1);
        assert_eq!(reported[0].worker.as_deref(), Some("node:4242"));
        let DispatcherFrame::Run { task } = w.next().await else {
            panic!()
        };
        assert_eq!(task.task_id, tasks[2].task_id);

        // Cancelling a running task sends Cancel and its result is dropped.
        dispatcher.cancel(&[tasks[1].task_id]);
        assert_eq!(
            w.next().await,
            DispatcherFrame::Cancel {
                task_id: tasks[1].task_id
            }
        );
        let outcome = TaskOutcome {
            task_id: tasks[1].task_id,
            attempt: 1,
            status: OutcomeStatus::Failed,
            result: None,
            error: Some(CANCELLED.into()),
            worker: None,
            started_at: None,
            finished_at: Utc::now(),
        };
        w.send(&WorkerFrame::Result { outcome }).await;
        assert!(apply(&mut dispatcher, next_event(&mut events).await).is_empty());
        assert_eq!(dispatcher.held(), 1);

        dispatcher.shutdown_workers();
        assert_eq!(w.next().await, DispatcherFrame::Shutdown);
        acceptor.abort();
    }
}
