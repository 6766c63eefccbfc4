//! The single writer: a batch validated on a copy, appended to the store,
//! installed at the store's revision, with its change report.

use super::*;

/// How often a write retries after another replica wrote first.
const WRITE_ATTEMPTS: usize = 3;

/// A condition a write needs on the current configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// The target must exist.
    Exists(Target),
    /// The target must not exist.
    Absent(Target),
}

/// What a write applies.
#[derive(Debug, Clone)]
pub enum Batch {
    /// A batch of mutations, as given.
    Mutations(Vec<Mutation>),
    /// A tenant file: its creating batch and the configuration it yields.
    /// With `replace`, an existing tenant is replaced by the smallest batch
    /// that turns its configuration into the file's.
    Import {
        /// The file's batch (`create_tenant` first).
        file: Vec<Mutation>,
        /// The configuration the file describes (already validated).
        config: Box<TenantConfig>,
        /// Replace an existing tenant instead of failing.
        replace: bool,
    },
}

/// A write, with its conditions and options.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    /// The tenant written.
    pub tenant: TenantId,
    /// What to apply.
    pub batch: Batch,
    /// Person on whose behalf the write is made (SPEC §6).
    pub actor: Option<String>,
    /// Refuse if the tenant changed after this revision.
    pub expected_revision: Option<Revision>,
    /// Further conditions.
    pub preconditions: Vec<Precondition>,
    /// Validate and report, store nothing.
    pub dry_run: bool,
    /// Report per-person changes of a real write too.
    pub include_changes: bool,
}

impl WriteRequest {
    /// A plain write of `mutations` to `tenant`.
    pub fn new(tenant: TenantId, mutations: Vec<Mutation>) -> Self {
        WriteRequest {
            tenant,
            batch: Batch::Mutations(mutations),
            actor: None,
            expected_revision: None,
            preconditions: Vec::new(),
            dry_run: false,
            include_changes: false,
        }
    }
}

/// The outcome of a write.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    /// The batch's revision; for a dry run, the revision it was evaluated at.
    pub revision: Revision,
    /// Per-person changes, when asked for (always for dry runs).
    pub changes: Option<ChangeSet>,
}

/// How many writes' breakdowns a replica keeps ([`Replica::recent_write_phases`]).
const PHASES_KEPT: usize = 4_096;

/// How long each part of one write took: the write path's breakdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WritePhases {
    /// Resolving the batch, checking its conditions, and validating it on a
    /// copy of the tenant's configuration (and authorizing its actor).
    pub validate: Duration,
    /// Appending it to the store: the commit.
    pub append: Duration,
    /// Compiling the tenant's next view and installing it.
    pub compile: Duration,
    /// Telling the observers (the watch hub's publication, raw subscribers,
    /// the decision caches of `at_least_revision` waiters).
    pub publish: Duration,
}

/// The field-path prefix validation uses for the entity a mutation writes
/// (`objects[Metric/m1]`), and whether the mutation puts that whole entity.
fn entity_path(m: &Mutation) -> Option<(String, bool)> {
    use model::config::{subject_label, target_label};
    let target_path = |t: &Target| match t {
        Target::Folder(id) => format!("folders[{id}]"),
        Target::Person(id) => format!("persons[{id}]"),
        Target::Group(id) => format!("access_groups[{id}]"),
        Target::Role(id) => format!("roles[{id}]"),
        Target::Object(k) => format!("objects[{}/{}]", k.kind, k.id),
    };
    Some(match m {
        Mutation::PutFolder(f) => (format!("folders[{}]", f.id), true),
        Mutation::PutPerson(p) => (format!("persons[{}]", p.id), true),
        Mutation::PutGroup(g) => (format!("access_groups[{}]", g.id), true),
        Mutation::AddGroupMember { group, .. } | Mutation::RemoveGroupMember { group, .. } => {
            (format!("access_groups[{group}]"), false)
        }
        Mutation::PutRole(r) => (format!("roles[{}]", r.id), true),
        Mutation::AssignRole { role, .. } | Mutation::UnassignRole { role, .. } => (format!("roles[{role}]"), false),
        Mutation::PutPartition(p) => (format!("partitions[{}]", p.id), true),
        Mutation::PutObject(o) => (format!("objects[{}/{}]", o.kind, o.id), true),
        Mutation::MoveObject { target, .. } => (target_path(target), false),
        Mutation::ProvisionVirtualQueue { queue, .. } => {
            (format!("objects[{}/{}]", model::types::SCRIPT, model::config::virtual_queue_script(queue)), false)
        }
        Mutation::PutAce(a) => (format!("aces[{} for {}]", target_label(&a.target), subject_label(&a.subject)), true),
        Mutation::PutCatalog(c) => (format!("catalogs[{}]", c.name), true),
        _ => return None,
    })
}

/// Names the mutation behind a whole-configuration validation error: an
/// error about `objects[Metric/m1].name` caused by mutation 3, a put of that
/// object, becomes `mutations[3].put_object.name`; one caused by another
/// mutation on the entity keeps the entity path after the mutation's
/// (`mutations[0].add_group_member.access_groups[sales].members`).
fn locate(e: model::ModelError, batch: &[Mutation]) -> model::ModelError {
    if e.field.starts_with("mutations[") {
        return e;
    }
    for (i, m) in batch.iter().enumerate().rev() {
        let Some((prefix, whole)) = entity_path(m) else { continue };
        let Some(rest) = e.field.strip_prefix(&prefix) else { continue };
        if !(rest.is_empty() || rest.starts_with('.')) {
            continue;
        }
        let field = if whole {
            format!("mutations[{i}].{}{rest}", m.op())
        } else {
            format!("mutations[{i}].{}.{}", m.op(), e.field)
        };
        return model::ModelError { field, ..e };
    }
    e
}

impl Replica {
    fn record_phases(&self, p: WritePhases) {
        let mut kept = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == PHASES_KEPT {
            kept.pop_front();
        }
        kept.push_back(p);
    }

    /// The breakdown of this replica's last writes (at most 4,096, the
    /// oldest first): where a write's time goes.
    pub fn recent_write_phases(&self) -> Vec<WritePhases> {
        self.phases.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect()
    }

    /// Applies a write: conditions, validation, the actor's permissions, then
    /// (unless a dry run) the store append and the install. Nothing changes on
    /// any error.
    pub async fn write(&self, req: WriteRequest) -> ReplicaResult<WriteOutcome> {
        if !self.snapshot.is_loaded() {
            return Err(ReplicaError::loading());
        }
        if let Batch::Mutations(m) = &req.batch {
            self.limits.check_batch("mutations", m.len())?;
            if m.is_empty() {
                return Err(ReplicaError::invalid("mutations", "the batch is empty"));
            }
        }
        let tenant = req.tenant.clone();
        let mut ws = self.writer.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let current = self.snapshot.state(tenant.as_str());
            let mutations = Arc::new(self.resolve_batch(&req, current.as_ref())?);
            self.check_conditions(&req, current.as_ref(), &mutations)?;

            // Validate (and authorize) on a copy, off the async workers.
            let (snapshot, t, m, cur, actor) = (
                Arc::clone(&self.snapshot),
                tenant.clone(),
                Arc::clone(&mutations),
                current.clone(),
                req.actor.clone(),
            );
            let import_target = match &req.batch {
                Batch::Import { config, .. } if current.is_some() => Some(config.clone()),
                _ => None,
            };
            let next = blocking(move || -> ReplicaResult<TenantConfig> {
                let next = snapshot.prepare(&t, &m).map_err(|e| locate(e, &m))?;
                if import_target.is_some_and(|want| *want != next) {
                    return Err(ReplicaError::Internal(format!(
                        "replacing tenant `{t}` could not be expressed as one batch; nothing was written"
                    )));
                }
                if let Some(actor) = &actor {
                    actor::authorize(cur.as_ref().map(|s| (&*s.config, &*s.view)), &next, &m, actor)?;
                }
                Ok(next)
            })
            .await??;

            if req.dry_run {
                let at = self.snapshot.revision();
                let limits = self.limits.change_budget();
                drop(ws);
                let changes = blocking(move || {
                    let view = TenantView::build_next(current.as_ref().map(|s| (&*s.view, &*s.config)), &next, at);
                    let old = current.as_ref().map(|s| changes::Side { config: &s.config, view: &s.view });
                    changes::compute(old, changes::Side { config: &next, view: &view }, &mutations, limits)
                })
                .await?;
                return Ok(WriteOutcome { revision: at, changes: Some(changes) });
            }

            let head = self.snapshot.revision();
            let validated = Instant::now();
            // The commit time is the replica's clock, read once: the store
            // records it, and this replica's observers hear of the same time
            // (as stored: whole milliseconds) that other replicas read back.
            let at = self.clock.now();
            match self.store.append(&tenant, &mutations, req.actor.as_deref(), Some(head), at).await {
                Ok(revision) => {
                    let appended = Instant::now();
                    let snapshot = Arc::clone(&self.snapshot);
                    let committed_at = crate::store::from_millis(crate::store::to_millis(at));
                    // Durable now: raw change streams hear of it before the
                    // view is compiled (they need none).
                    let applied = Applied {
                        revision,
                        tenant: &tenant,
                        mutations: &mutations,
                        actor: req.actor.as_deref(),
                        committed_at,
                        state: None,
                    };
                    self.notify_record(&applied);
                    let state = blocking(move || snapshot.install(next, revision)).await?;
                    let compiled = Instant::now();
                    self.publish();
                    self.notify_installed(&Applied { state: Some(&state), ..applied });
                    self.record_phases(WritePhases {
                        validate: validated - started,
                        append: appended - validated,
                        compile: compiled - appended,
                        publish: compiled.elapsed(),
                    });
                    let imported = mutations.iter().any(|m| matches!(m, Mutation::CreateTenant { .. }))
                        || matches!(req.batch, Batch::Import { .. });
                    self.maybe_checkpoint(&mut ws, &tenant, revision, &state, imported);
                    drop(ws);
                    tracing::info!(
                        tenant = %tenant,
                        revision,
                        mutations = mutations.len(),
                        actor = req.actor.as_deref().unwrap_or(""),
                        "batch written"
                    );
                    let changes = if req.include_changes {
                        let limits = self.limits.change_budget();
                        Some(
                            blocking(move || {
                                let old = current.as_ref().map(|s| changes::Side { config: &s.config, view: &s.view });
                                let new = changes::Side { config: &state.config, view: &state.view };
                                changes::compute(old, new, &mutations, limits)
                            })
                            .await?,
                        )
                    } else {
                        None
                    };
                    return Ok(WriteOutcome { revision, changes });
                }
                Err(StoreError::Conflict { expected, actual }) if attempt < WRITE_ATTEMPTS => {
                    tracing::info!(expected, actual, "another replica wrote first; catching up and retrying");
                    self.catch_up_locked(&mut ws).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The mutations a write applies, given the tenant's current state.
    fn resolve_batch(&self, req: &WriteRequest, current: Option<&TenantState>) -> ReplicaResult<Vec<Mutation>> {
        match &req.batch {
            Batch::Mutations(m) => Ok(m.clone()),
            Batch::Import { file, config, replace } => match current {
                None => Ok(file.clone()),
                Some(_) if !replace => Err(ReplicaError::AlreadyExists(format!(
                    "tenant `{}` exists already; import with `replace` to replace its whole configuration",
                    req.tenant
                ))),
                Some(s) => Ok(replace::replace_batch(&s.config, config)),
            },
        }
    }

    /// Tenant existence, `expected_revision` and preconditions.
    fn check_conditions(
        &self,
        req: &WriteRequest,
        current: Option<&TenantState>,
        batch: &[Mutation],
    ) -> ReplicaResult<()> {
        let creates = matches!(batch.first(), Some(Mutation::CreateTenant { .. }));
        if current.is_none() && !creates {
            return Err(ReplicaError::NotFound(format!(
                "unknown tenant `{}` (a batch that creates it starts with `create_tenant`)",
                req.tenant
            )));
        }
        let last = current.map_or(0, |s| s.view.revision());
        if let Some(expected) = req.expected_revision {
            if last > expected {
                return Err(ReplicaError::FailedPrecondition(format!(
                    "expected_revision: tenant `{}` changed at revision `{last}`, after the expected revision `{expected}`; nothing was written",
                    req.tenant
                )));
            }
        }
        for (i, p) in req.preconditions.iter().enumerate() {
            let exists = |t: &Target| current.is_some_and(|s| s.config.has_target(t));
            match p {
                Precondition::Exists(t) if !exists(t) => {
                    return Err(ReplicaError::FailedPrecondition(format!(
                        "preconditions[{i}].exists: {} does not exist; nothing was written",
                        model::config::target_label(t)
                    )));
                }
                Precondition::Absent(t) if exists(t) => {
                    return Err(ReplicaError::FailedPrecondition(format!(
                        "preconditions[{i}].absent: {} exists; nothing was written",
                        model::config::target_label(t)
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Counts a batch of `tenant` and, every [`Limits::checkpoint_every`]
    /// batches (or at once when `force`), asks the background writer for a
    /// checkpoint of `state`.
    fn maybe_checkpoint(
        &self,
        ws: &mut WriterState,
        tenant: &TenantId,
        revision: Revision,
        state: &TenantState,
        force: bool,
    ) {
        let count = ws.since_checkpoint.entry(tenant.0.clone()).or_default();
        *count += 1;
        if !force && *count < self.limits.checkpoint_every {
            return;
        }
        *count = 0;
        self.checkpoints.request(tenant, revision, Arc::clone(&state.config));
    }
}
