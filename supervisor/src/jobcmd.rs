//! The console's job commands: `run FILE [options]` and `batch DIR
//! [options]` (operator). Each document: read from the stick (size cap),
//! opened in the sandboxed `doc-open` child with the session's document
//! key (this process unwraps only the session key), answered by one fresh
//! sandboxed worker on the active model (split to fit its context, the
//! parts' answers combined), sealed to the image's admin recipients and
//! signed with the appliance key, audited, and written beside the
//! document with its receipt (temporary names, fsync, rename). The
//! console shows progress and a summary, never the text (unless the
//! policy allows `--show`). Every refusal or failure is one line, an
//! audit entry, and nothing written to the stick.

use crate::auditd::{Draft, ReceiptAnswer};
use crate::console::Console;
use crate::control::Request;
use crate::document::open::Limits;
use crate::job::parts::{self, Event, Params};
use crate::job::setup::{self, ModelChoice};
use crate::job::{answer, counter, engine, input, opener};
use crate::jobargs::{self, RunRequest};
use crate::session::{utc, wall_now};
use crate::stickput::RwStick;
use airlock_formats::audit::entry::{plaintext_tag, Action, Outcome, Role};
use airlock_formats::audit::job::JobRecord;
use airlock_formats::escape;
use airlock_formats::tasks::{TaskTable, IMAGE_TASKS};
use pgp::composed::{SignedPublicKey, SignedSecretKey};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The worker binary in the image.
pub const WORKER_BIN: &str = "/bin/airlock-worker";
/// The image's admin recipients.
pub const RECIPIENTS_DIR: &str = crate::document::recipients::IMAGE_DIR;
/// How long opening one document may take.
pub const OPEN_WITHIN: Duration = Duration::from_secs(120);
/// How long the worker may take to load the model (QEMU under TCG is slow).
pub const READY_WITHIN: Duration = Duration::from_secs(600);

/// Everything a job needs that does not depend on the document.
pub(crate) struct JobCtx {
    pub tasks: TaskTable,
    pub model: ModelChoice,
    pub keys: Vec<SignedSecretKey>,
    pub recipients: Vec<SignedPublicKey>,
    pub tag: Option<[u8; 32]>,
    pub appliance: String,
    pub account: String,
    pub role: Role,
}

/// How one document ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DocResult {
    /// Answer and receipt written: (answer name, answer SHA-256).
    Done {
        answer: String,
        sha256: String,
    },
    /// Refused or failed: (audit reason code, one-line reason).
    Refused {
        code: &'static str,
        why: String,
    },
    Failed {
        code: &'static str,
        why: String,
    },
}

/// Where a document is.
pub(crate) struct DocPlace {
    pub disk: String,
    pub dev: String,
    /// Folder components under the stick's root (empty or one).
    pub folder: Vec<String>,
    pub name: String,
    /// The file on the read-only mount.
    pub path: PathBuf,
}

impl DocPlace {
    fn shown(&self) -> String {
        let mut s = self.folder.join("/");
        if !s.is_empty() {
            s.push('/');
        }
        s.push_str(&self.name);
        escape::text(&s).into_owned()
    }
}

/// Whether `disk` left the system (watched for up to 2 s: the kernel
/// removes a pulled stick's block device a moment after its reads fail).
fn stick_gone(disk: &str) -> bool {
    let sys = Path::new("/sys/block").join(disk);
    for _ in 0..10 {
        if !sys.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// One progress line (`job 7: part 2 of 3 done: …`).
pub fn progress_line(job: u64, e: &Event) -> String {
    match e {
        Event::Split { n: 1, .. } => format!("job {job}: the document fits in one part"),
        Event::Split { n, budget } => {
            format!("job {job}: split into {n} parts of at most {budget} tokens")
        }
        Event::PartStart { i, n, tokens } => {
            format!("job {job}: part {i} of {n}: reading {tokens} tokens")
        }
        Event::Writing {
            i,
            n,
            tokens,
            tok_per_s,
        } => format!(
            "job {job}: part {i} of {n}: {tokens} pieces written so far ({tok_per_s:.1} per s)"
        ),
        Event::PartDone {
            i,
            n,
            tokens_out,
            tok_per_s,
            left_s,
        } => {
            let left = match left_s {
                Some(s) => format!(", about {s} s left"),
                None => String::new(),
            };
            format!(
                "job {job}: part {i} of {n} done: {tokens_out} tokens written, {tok_per_s:.1} tok/s{left}"
            )
        }
        Event::Combine { answers, groups } => {
            format!("job {job}: combining {answers} partial answers ({groups} prompt(s))")
        }
    }
}

impl Console {
    fn job_out(&mut self, line: &str) {
        self.out(&format!("{line}\n"));
    }

    /// Prepares a job: session keys, recipients, model, tasks.
    fn job_ctx(&mut self, want_model: Option<&str>) -> Result<JobCtx, (&'static str, String)> {
        let Some(l) = &self.login else {
            return Err(("not-logged-in", "log in first".into()));
        };
        let account = l.session.name().to_string();
        let role = l.session.role();
        let appliance = l.session.appliance_id().to_string();
        let tag = l.session.tag().copied();
        let keys = setup::keys(l.session.document_keys()).map_err(|e| ("no-key", e.to_string()))?;
        let now = u32::try_from(wall_now()).unwrap_or(u32::MAX);
        let recipients = setup::recipients(Path::new(RECIPIENTS_DIR), now)
            .map_err(|e| ("no-recipients", e.to_string()))?;
        let store = self.state_root.join(crate::models::STORE_DIR);
        let record = Path::new(crate::model_check::record::RECORD_DIR);
        let model = setup::model(&store, record, want_model).map_err(|e| {
            let code = match e {
                setup::SetupError::NoModel => "no-model",
                _ => "model-unavailable",
            };
            (code, e.to_string())
        })?;
        let tasks = setup::tasks(Path::new(IMAGE_TASKS), Some(&model))
            .map_err(|e| ("tasks-unusable", e.to_string()))?;
        Ok(JobCtx {
            tasks,
            model,
            keys,
            recipients,
            tag,
            appliance,
            account,
            role,
        })
    }

    /// The task table for parsing arguments: the image's, with the only
    /// active model's own when it brings one.
    fn arg_tasks(&self) -> Result<TaskTable, String> {
        let store = self.state_root.join(crate::models::STORE_DIR);
        let record = Path::new(crate::model_check::record::RECORD_DIR);
        let model = setup::model(&store, record, None).ok();
        setup::tasks(Path::new(IMAGE_TASKS), model.as_ref()).map_err(|e| e.to_string())
    }

    fn job_refused(&mut self, job: Option<u64>, code: &str, why: &str, rec: Option<&JobRecord>) {
        let (me, role) = self.who();
        let mut d = Draft::by(&me, role, Action::Job, Outcome::Refused).reason(code);
        d.job = job;
        if let Some(r) = rec {
            d.subjects = r.subjects();
            d.detail = r.detail();
        }
        let rec_err = self.audit(d).err();
        let label = job
            .map(|j| format!("job {j}"))
            .unwrap_or_else(|| "run".into());
        // The reasons of the OpenPGP core start with "refused: " already.
        let why = why.strip_prefix("refused: ").unwrap_or(why);
        self.out(&format!(
            "{label} refused: {}; nothing was written\n",
            crate::screen::line(why)
        ));
        if let Some(e) = rec_err {
            self.out(&format!("(the audit log could not record this: {e})\n"));
        }
    }

    /// `run FILE [--task NAME] [--question TEXT] [--language L] [--model NAME] [--show]`.
    pub(crate) fn cmd_run(&mut self, rest: &str) {
        let tasks = match self.arg_tasks() {
            Ok(t) => t,
            Err(e) => return self.job_refused(None, "tasks-unusable", &e, None),
        };
        let req = match jobargs::parse_run(rest, &tasks) {
            Ok(r) => r,
            Err(e) => return self.out(&format!("{e}; see 'help run'\n")),
        };
        if req.show && self.policy.job_allow_show == 0 {
            return self.out(
                "run refused: --show is not allowed by this appliance's policy (job_allow_show = 0); \
                 the answer leaves only encrypted\n",
            );
        }
        if let Err(why) = self.audit_writable() {
            return self.out(&format!("run refused: {why}\n"));
        }
        let ctx = match self.job_ctx(req.model.as_deref()) {
            Ok(c) => c,
            Err((code, why)) => return self.job_refused(None, code, &why, None),
        };
        let place = match self.place(&req.file.stick, &req.file.path) {
            Ok(p) => p,
            Err(why) => return self.job_refused(None, "no-input", &why, None),
        };
        if place.path.parent().is_some_and(|d| {
            d.join(crate::job::answer_name(&place.name))
                .symlink_metadata()
                .is_ok()
        }) {
            let why = format!(
                "{} already exists on {}; move it away or choose another name",
                escape::text(&crate::job::answer_name(&place.name)),
                place.dev
            );
            return self.job_refused(None, "answer-exists", &why, None);
        }
        let job = match counter::next(&self.state_root) {
            Ok(n) => n,
            Err(e) => return self.job_refused(None, "job-counter", &e, None),
        };
        let r = self.run_one(&ctx, &req, &place, job);
        if let DocResult::Done { .. } = r {
            self.out(&format!(
                "'eject {}' before pulling the stick.\n",
                escape::text(&place.disk)
            ));
        }
    }

    /// Resolves a FILE argument to the stick and its read-only mount.
    pub(crate) fn place(
        &mut self,
        stick: &Option<String>,
        path: &[String],
    ) -> Result<DocPlace, String> {
        let disk = crate::stickwrite::choose(stick.as_deref()).map_err(|e| e.to_string())?;
        // Sticks pulled since they were held are let go (their mounts are
        // dead), so a later 'eject' is not ambiguous.
        let present: Vec<String> = crate::usb::scan(Path::new("/sys/block"), &[])
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.name)
            .collect();
        self.sticks.prune(&present);
        let dev = crate::stickwrite::device_of(&disk);
        let root = self.sticks.root(&disk, &dev).map_err(|e| e.to_string())?;
        let (folder, name) = match path {
            [name] => (Vec::new(), name.clone()),
            [dir, name] => (vec![dir.clone()], name.clone()),
            _ => return Err("FILE is NAME or DIR/NAME".into()),
        };
        let path = folder.iter().fold(root, |p, c| p.join(c)).join(&name);
        Ok(DocPlace {
            disk,
            dev,
            folder,
            name,
            path,
        })
    }

    /// One document, start to end; prints progress and the summary.
    pub(crate) fn run_one(
        &mut self,
        ctx: &JobCtx,
        req: &RunRequest,
        place: &DocPlace,
        job: u64,
    ) -> DocResult {
        let started = Instant::now();
        let shown = place.shown();
        let mut rec = answer::record(&req.task, None, None, Some(&ctx.model));
        self.job_out(&format!(
            "job {job}: {shown} on {}, task {}, model {} version {}",
            place.dev, req.task, ctx.model.name, ctx.model.version
        ));
        // 1. The ciphertext, capped.
        let doc = match input::read(&place.path, &shown, self.policy.job_max_input_bytes) {
            Ok(d) => d,
            // A stick pulled while it is read can make the file look
            // missing (the directory no longer reads): say what happened.
            Err(input::InputError::Missing(_)) if stick_gone(&place.disk) => {
                let why = format!("read {shown}: the stick is gone (stick pulled?)");
                return self.doc_refused(job, "input-unreadable", why, &rec);
            }
            Err(e) => {
                let code = match e {
                    input::InputError::Read { .. } => "input-unreadable",
                    _ => "input-refused",
                };
                return self.doc_refused(job, code, e.to_string(), &rec);
            }
        };
        rec.input = Some((
            airlock_formats::audit::entry::sanitise_name(place.name.as_bytes()),
            doc.sha256.clone(),
        ));
        // 2. Opened in the sandbox; only the session key is unwrapped here.
        let limits = Limits {
            max_ciphertext: usize::try_from(self.policy.job_max_input_bytes).unwrap_or(usize::MAX),
            max_plaintext: usize::try_from(self.policy.job_max_plaintext_bytes)
                .unwrap_or(usize::MAX),
        };
        let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/init"));
        let text = match opener::open_document(&program, &doc.bytes, &ctx.keys, limits, OPEN_WITHIN)
        {
            Ok(t) => t,
            Err(opener::OpenerError::Refused(why)) => {
                return self.doc_refused(job, "document-refused", why, &rec)
            }
            Err(e) => return self.doc_failed(job, "open-failed", e.to_string(), &rec),
        };
        drop(doc);
        let Some(plain) = text.as_str() else {
            return self.doc_refused(
                job,
                "document-refused",
                "the document is not UTF-8 text".into(),
                &rec,
            );
        };
        rec.input_tag = ctx.tag.as_ref().map(|k| plaintext_tag(k, plain.as_bytes()));
        self.job_out(&format!(
            "job {job}: opened: {} of text",
            crate::sticklist::size(plain.len() as u64)
        ));
        // 3. One fresh sandboxed worker for this job.
        let Some(task) = ctx.tasks.get(&req.task).cloned() else {
            return self.doc_refused(job, "bad-task", format!("unknown task {}", req.task), &rec);
        };
        let store = self.state_root.join(crate::models::STORE_DIR);
        let mut spec = match crate::model_check::worker_spec::worker_spec(
            Path::new(WORKER_BIN),
            &store,
            Path::new(crate::model_check::record::RECORD_DIR),
            &ctx.model.name,
        ) {
            Ok(s) => s,
            Err(e) => return self.doc_refused(job, "model-unavailable", e.to_string(), &rec),
        };
        spec.limits.address_space = Some(self.policy.job_memory_mib << 20);
        self.job_out(&format!(
            "job {job}: loading the model in a fresh sandboxed worker"
        ));
        let mut worker = match engine::WorkerEngine::start(spec, &ctx.model.gguf, READY_WITHIN) {
            Ok(w) => w,
            Err(e) => return self.doc_failed(job, "worker-failed", e, &rec),
        };
        let context = usize::try_from(
            self.policy
                .job_context_tokens
                .min(ctx.model.context_length.max(1))
                .min(worker.context_length().unwrap_or(u64::MAX)),
        )
        .unwrap_or(2048);
        let params = Params {
            question: req.question.as_deref(),
            language: req.language.as_deref(),
            context,
            answer_tokens: u32::try_from(self.policy.job_answer_tokens).unwrap_or(256),
        };
        let mut tty = self.tty.try_clone().ok();
        let result = parts::run(&mut worker, &task, &params, plain, &mut |e| {
            if let Some(t) = tty.as_mut() {
                let _ = t.write_all(format!("{}\n", progress_line(job, &e)).as_bytes());
            }
        });
        let end = worker.finish();
        drop(text);
        let ans = match result {
            Ok(a) => a,
            Err(parts::PartsError::Empty) => {
                return self.doc_refused(
                    job,
                    "document-refused",
                    "the document is empty".into(),
                    &rec,
                )
            }
            Err(e) => {
                // A worker that died says why (out of memory, crash).
                let why = match end {
                    Err(death) => death,
                    Ok(()) => e.to_string(),
                };
                return self.doc_failed(job, "worker-failed", why, &rec);
            }
        };
        rec.tokens = Some((ans.tokens_in, ans.tokens_out));
        // 4. Sealed to the recipients, signed by the appliance key.
        let when = utc(wall_now());
        let header = answer::Header {
            job,
            appliance: &ctx.appliance,
            document: &shown,
            input_sha256: rec.input.as_ref().map(|i| i.1.as_str()).unwrap_or(""),
            task: &req.task,
            question: req.question.as_deref(),
            language: req.language.as_deref(),
            model: &ctx.model,
            operator: &ctx.account,
            when_utc: &when,
            parts: ans.parts,
        };
        let plain_answer = answer::text(&header, &ans.text);
        let Some(key) = ctx.keys.first() else {
            return self.doc_failed(job, "no-key", "no document key".into(), &rec);
        };
        let now = u32::try_from(wall_now()).unwrap_or(u32::MAX);
        let sealed =
            match answer::seal_answer(&plain_answer, key, &ctx.recipients, now, ctx.tag.as_ref()) {
                Ok(s) => s,
                Err(e) => return self.doc_failed(job, "seal-failed", e.to_string(), &rec),
            };
        let show = req.show.then(|| plain_answer.clone());
        drop(plain_answer);
        // 5. Staged on the stick, audited, the receipt staged, both renamed.
        let answer_name = crate::job::answer_name(&place.name);
        let receipt_name = crate::job::receipt_name(&place.name);
        self.sticks.release(&place.disk);
        let mut stick = match RwStick::open(
            &place.disk,
            &place.folder,
            &format!("job {job} on {}", self.tty_name),
        ) {
            Ok(s) => s,
            Err(e) => return self.doc_failed(job, "stick-write-failed", e.to_string(), &rec),
        };
        if stick.exists(&answer_name) {
            drop(stick);
            let why = format!(
                "{} already exists on {}",
                escape::text(&answer_name),
                place.dev
            );
            return self.doc_refused(job, "answer-exists", why, &rec);
        }
        if let Err(e) = stick.stage(&answer_name, &sealed.bytes) {
            drop(stick);
            return self.doc_failed(job, "stick-write-failed", e.to_string(), &rec);
        }
        rec.output = Some((
            airlock_formats::audit::entry::sanitise_name(answer_name.as_bytes()),
            sealed.sha256.clone(),
        ));
        rec.output_tag = sealed.tag.clone();
        let mut d = Draft::by(&ctx.account, ctx.role, Action::Job, Outcome::Ok);
        d.job = Some(job);
        d.subjects = rec.subjects();
        d.detail = rec.detail();
        if let Err(e) = self.audit(d) {
            drop(stick);
            self.out(&format!(
                "job {job} failed: the audit log cannot record it ({e}); nothing was written\n"
            ));
            return DocResult::Failed {
                code: "audit-failed",
                why: e,
            };
        }
        let receipt = match self
            .request_done(Request::Receipt)
            .ok()
            .and_then(|t| ReceiptAnswer::decode(&t))
        {
            Some(r) => r,
            None => {
                drop(stick);
                return self.doc_failed(
                    job,
                    "receipt-failed",
                    "no receipt could be made (is the audit key held?)".into(),
                    &rec,
                );
            }
        };
        if let Err(e) = stick
            .stage(&receipt_name, receipt.text.as_bytes())
            .and_then(|()| stick.commit())
        {
            return self.doc_failed(job, "stick-write-failed", e.to_string(), &rec);
        }
        let secs = started.elapsed().as_secs();
        self.out(&format!(
            "job {job} done: {} and {} written to {} (input SHA-256 {}, task {}, model {} version {}, \
             {} part(s), {} tokens in, {} tokens out, {secs} s; audit entry {})\n",
            escape::text(&answer_name),
            escape::text(&receipt_name),
            place.dev,
            rec.input.as_ref().map(|i| i.1.as_str()).unwrap_or(""),
            req.task,
            ctx.model.name,
            ctx.model.version,
            ans.parts,
            ans.tokens_in,
            ans.tokens_out,
            receipt.seq
        ));
        if let Some(text) = show {
            self.out(&format!(
                "--- answer (shown: policy job_allow_show = 1) ---\n{}--- end ---\n",
                crate::screen::lines(&text)
            ));
        }
        DocResult::Done {
            answer: answer_name,
            sha256: sealed.sha256,
        }
    }

    fn doc_refused(
        &mut self,
        job: u64,
        code: &'static str,
        why: String,
        rec: &JobRecord,
    ) -> DocResult {
        self.job_refused(Some(job), code, &why, Some(rec));
        DocResult::Refused { code, why }
    }

    fn doc_failed(
        &mut self,
        job: u64,
        code: &'static str,
        why: String,
        rec: &JobRecord,
    ) -> DocResult {
        let (me, role) = self.who();
        let mut d = Draft::by(&me, role, Action::Job, Outcome::Failed).reason(code);
        d.job = Some(job);
        d.subjects = rec.subjects();
        d.detail = rec.detail();
        let rec_err = self.audit(d).err();
        self.out(&format!(
            "job {job} failed: {}; nothing was written\n",
            crate::screen::line(&why)
        ));
        if let Some(e) = rec_err {
            self.out(&format!("(the audit log could not record this: {e})\n"));
        }
        DocResult::Failed { code, why }
    }
}

impl Console {
    /// `batch DIR [--task NAME] [--question TEXT] [--language L] [--model NAME]`:
    /// every `*.gpg`/`*.pgp`/`*.asc` document in DIR, one fresh worker per
    /// document; a failure does not stop the batch; documents whose answer
    /// is there and valid are skipped; a signed summary goes beside them.
    pub(crate) fn cmd_batch(&mut self, rest: &str) {
        let tasks = match self.arg_tasks() {
            Ok(t) => t,
            Err(e) => return self.job_refused(None, "tasks-unusable", &e, None),
        };
        let req = match jobargs::parse_run(rest, &tasks) {
            Ok(r) => r,
            Err(e) => {
                let e = e.to_string().replacen("run:", "batch:", 1);
                return self.out(&format!("{e}; see 'help batch'\n"));
            }
        };
        if req.show {
            return self.out("batch: --show is for 'run' only; see 'help batch'\n");
        }
        let [folder] = req.file.path.as_slice() else {
            return self.out(
                "batch: DIR is one folder on the stick, e.g. 'batch inbox'; see 'help batch'\n",
            );
        };
        if let Err(why) = self.audit_writable() {
            return self.out(&format!("batch refused: {why}\n"));
        }
        let ctx = match self.job_ctx(req.model.as_deref()) {
            Ok(c) => c,
            Err((code, why)) => return self.job_refused(None, code, &why, None),
        };
        let audit_key = match crate::identity::vault::public_keys(&self.state_root)
            .map_err(|e| e.to_string())
            .and_then(|k| {
                airlock_formats::audit::note::NoteVerifier::parse(&k.audit_verifier)
                    .map_err(|e| e.to_string())
            }) {
            Ok(k) => k,
            Err(e) => return self.out(&format!("batch refused: the audit key: {e}\n")),
        };
        let names = match self.batch_inputs(&req.file.stick, folder) {
            Ok(n) => n,
            Err(why) => return self.out(&format!("batch refused: {why}\n")),
        };
        let shown_folder = escape::text(folder).into_owned();
        if names.is_empty() {
            return self.out(&format!(
                "batch: no documents (*.gpg, *.pgp, *.asc) in {shown_folder}\n"
            ));
        }
        let started = utc(wall_now());
        let total = names.len();
        let mut items = Vec::with_capacity(total);
        let mut place_disk = String::new();
        for (i, name) in names.iter().enumerate() {
            self.out(&format!(
                "batch: document {} of {total}: {}\n",
                i + 1,
                escape::text(name)
            ));
            let item = self.batch_one(&ctx, &req, folder, name, &audit_key, &mut place_disk);
            items.push(item);
        }
        let summary = crate::job::batch::Summary {
            schema: crate::job::batch::SCHEMA,
            appliance: ctx.appliance.clone(),
            operator: ctx.account.clone(),
            folder: shown_folder.clone(),
            task: req.task.clone(),
            model: crate::job::batch::ModelFacts {
                name: ctx.model.name.clone(),
                version: ctx.model.version,
                manifest_sha256: ctx.model.manifest_sha256.clone(),
            },
            started: started.clone(),
            finished: utc(wall_now()),
            items,
        };
        let count = |r: &str| summary.items.iter().filter(|i| i.result == r).count();
        let tally = format!(
            "{} done, {} skipped (answer already there and valid), {} refused, {} failed",
            count("ok"),
            count("skipped"),
            count("refused"),
            count("failed")
        );
        let json = crate::job::batch::to_json(&summary);
        let stamp = summary.finished.replace([' ', ':'], "-");
        let base = format!("batch-{stamp}.summary.json");
        let written = ctx
            .keys
            .first()
            .ok_or_else(|| "no document key".to_string())
            .and_then(|k| crate::job::batch::sign(&json, k))
            .and_then(|sig| {
                self.sticks.release(&place_disk);
                let mut s = RwStick::open(
                    &place_disk,
                    std::slice::from_ref(folder),
                    &format!("batch summary on {}", self.tty_name),
                )
                .map_err(|e| e.to_string())?;
                s.stage(&base, &json).map_err(|e| e.to_string())?;
                s.stage(&format!("{base}.asc"), &sig)
                    .map_err(|e| e.to_string())?;
                s.commit().map_err(|e| e.to_string())
            });
        match written {
            Ok(()) => self.out(&format!(
                "batch done: {total} document(s): {tally}; summary {shown_folder}/{base} (+ .asc signature)\n'eject {}' before pulling the stick.\n",
                escape::text(&place_disk)
            )),
            Err(e) => self.out(&format!(
                "batch done: {total} document(s): {tally}; the summary was NOT written: {}\n",
                crate::screen::line(&e)
            )),
        }
    }

    /// The batch's documents in `folder`, sorted by name.
    fn batch_inputs(
        &mut self,
        stick: &Option<String>,
        folder: &str,
    ) -> Result<Vec<String>, String> {
        let place = self.place(stick, &[folder.to_string(), "x".into()])?;
        let dir = place
            .path
            .parent()
            .map(Path::to_path_buf)
            .ok_or("no folder")?;
        let rd = std::fs::read_dir(&dir)
            .map_err(|e| format!("no folder {} on {}: {e}", escape::text(folder), place.dev))?;
        let mut names: Vec<String> = rd
            .filter_map(Result::ok)
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| crate::job::is_batch_input(n))
            .collect();
        names.sort();
        Ok(names)
    }

    fn batch_one(
        &mut self,
        ctx: &JobCtx,
        req: &RunRequest,
        folder: &str,
        name: &str,
        audit_key: &airlock_formats::audit::note::NoteVerifier,
        disk_out: &mut String,
    ) -> crate::job::batch::Item {
        use crate::job::batch::{answer_valid, Item};
        let mut item = Item {
            input: escape::text(name).into_owned(),
            input_sha256: None,
            job: None,
            result: "failed",
            reason: None,
            output: None,
            output_sha256: None,
        };
        let place = match self.place(&req.file.stick, &[folder.to_string(), name.to_string()]) {
            Ok(p) => p,
            Err(e) => {
                item.reason = Some(e);
                return item;
            }
        };
        disk_out.clone_from(&place.disk);
        let dir = place
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let answer = crate::job::answer_name(name);
        if dir.join(&answer).symlink_metadata().is_ok() {
            let input = input::read(&place.path, name, self.policy.job_max_input_bytes);
            let check = input.as_ref().map_err(|e| e.to_string()).and_then(|inp| {
                let a = std::fs::read(dir.join(&answer)).map_err(|e| e.to_string())?;
                let r = std::fs::read(dir.join(crate::job::receipt_name(name)))
                    .map_err(|e| format!("receipt: {e}"))?;
                answer_valid(&inp.sha256, &a, &r, audit_key)?;
                Ok(crate::job::input::hex(
                    &<sha2::Sha256 as sha2::Digest>::digest(&a),
                ))
            });
            item.input_sha256 = input.ok().map(|i| i.sha256);
            item.output = Some(escape::text(&answer).into_owned());
            match check {
                Ok(sha) => {
                    self.out(&format!(
                        "batch: {} skipped: its answer is there and its receipt verifies\n",
                        escape::text(name)
                    ));
                    item.result = "skipped";
                    item.output_sha256 = Some(sha);
                }
                Err(why) => {
                    self.out(&format!(
                        "batch: {} refused: {} is there but not valid ({}); move it away to run it again\n",
                        escape::text(name),
                        escape::text(&answer),
                        crate::screen::line(&why)
                    ));
                    item.result = "refused";
                    item.reason = Some(format!("answer-invalid: {why}"));
                }
            }
            return item;
        }
        let job = match counter::next(&self.state_root) {
            Ok(n) => n,
            Err(e) => {
                item.reason = Some(e);
                return item;
            }
        };
        item.job = Some(job);
        item.input_sha256 = input::read(&place.path, name, self.policy.job_max_input_bytes)
            .ok()
            .map(|i| i.sha256);
        match self.run_one(ctx, req, &place, job) {
            DocResult::Done { answer, sha256 } => {
                item.result = "ok";
                item.output = Some(escape::text(&answer).into_owned());
                item.output_sha256 = Some(sha256);
            }
            DocResult::Refused { code, why } => {
                item.result = "refused";
                item.reason = Some(format!("{code}: {}", crate::screen::line(&why)));
            }
            DocResult::Failed { code, why } => {
                item.result = "failed";
                item.reason = Some(format!("{code}: {}", crate::screen::line(&why)));
            }
        }
        item
    }
}
