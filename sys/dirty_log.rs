// SPDX-License-Identifier: GPL-2.0

//! Device-mapper's dirty-log API: the type registration, the ops trampolines, and the target
//! and device handles a log uses.

use core::ptr::NonNull;

use kernel::{
    error::{from_result, to_result},
    ffi::{c_char, c_int, c_uint},
    new_mutex,
    prelude::*,
    str::CStrExt,
    sync::{Arc, ArcBorrow, Mutex},
    types::{ForeignOwnable, Opaque},
    ThisModule,
};

use super::raw;

/// Which status text device-mapper asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatusKind {
    /// `dmsetup status`.
    Info,
    /// `dmsetup table`.
    Table,
    /// The IMA measurement string.
    Ima,
}

/// A dirty-log implementation: what device-mapper's mirror target calls.
///
/// Each method is one op of `struct dm_dirty_log_type`; see `include/linux/dm-dirty-log.h`.
pub(crate) trait DirtyLog: Send + Sync + Sized + 'static {
    /// What the registration hands every constructor (the type's shared state).
    type Context: Send + Sync;
    /// Creates a log for the target being constructed from the table's log arguments.
    fn ctr(context: &Self::Context, target: &Constructing, args: &Args<'_>) -> Result<Arc<Self>>;
    /// Destroys the log.
    fn dtr(this: Arc<Self>);
    /// The mirror is about to suspend.
    fn presuspend(&self) -> Result;
    /// The mirror has suspended (may stop work items that hold the log).
    fn postsuspend(this: ArcBorrow<'_, Self>) -> Result;
    /// The mirror resumes (may queue work that holds the log).
    fn resume(this: ArcBorrow<'_, Self>) -> Result;
    /// Region size in sectors.
    fn region_size(&self) -> u32;
    /// Whether the region is clean (failures count as not clean).
    fn is_clean(&self, region: u64) -> bool;
    /// Whether the region is in sync; must not sleep unless `can_block`.
    fn in_sync(&self, region: u64, can_block: bool) -> Result<bool>;
    /// Makes pending marks and clears durable (may queue work that holds the log).
    fn flush(this: ArcBorrow<'_, Self>) -> Result;
    /// Marks a region dirty. Called under a rwlock of dm-region-hash: must not sleep.
    fn mark_region(&self, region: u64);
    /// Marks a region clean.
    fn clear_region(&self, region: u64);
    /// A region to recover, if any.
    fn resync_work(&self) -> Result<Option<u64>>;
    /// Records whether a region is in sync.
    fn set_region_sync(&self, region: u64, in_sync: bool);
    /// How many regions are in sync.
    fn sync_count(&self) -> u64;
    /// Writes a NUL-terminated status text into `out`; returns its length without the NUL.
    fn status(&self, kind: StatusKind, out: &mut [u8]) -> usize;
    /// Whether another node is recovering the region.
    fn is_remote_recovering(&self, region: u64) -> bool;
    /// The mirror's leg flush the log was given at `ctr` (see [`Constructing::leg_flush`]);
    /// the `dtr` trampoline closes it before the log's `dtr` runs.
    fn leg_flush(&self) -> &LegFlush;
}

/// The mirror target a log belongs to.
///
/// # Invariants
///
/// Points to a `dm_target` that outlives the log: device-mapper destroys the log before it
/// frees its target.
#[derive(Clone, Copy)]
pub(crate) struct Target(NonNull<raw::dm_target>);

// SAFETY: The target outlives the log (type invariant) and the functions called on it may be
// called from any task.
unsafe impl Send for Target {}
// SAFETY: As for `Send`; `Target` only reads immutable fields and calls thread-safe functions.
unsafe impl Sync for Target {}

impl Target {
    /// Length of the target in sectors.
    pub(crate) fn len(&self) -> u64 {
        // SAFETY: By the type invariant the target is valid; `len` is set before the log is
        // created and never changes afterwards.
        unsafe { (*self.0.as_ptr()).len }
    }

    /// Raises a device-mapper event on the target's table (wakes dmeventd).
    pub(crate) fn table_event(&self) {
        // SAFETY: By the type invariant the target, and so its table, is valid.
        unsafe { raw::dm_table_event((*self.0.as_ptr()).table) };
    }
}

/// The target while its log is being constructed: what only a log constructor may do.
///
/// Device-mapper expects `dm_get_device` during the target's constructor, and the device back
/// before the target goes away; so only the dirty-log `ctr` trampoline makes this, and lends it
/// for the call.
pub(crate) struct Constructing {
    target: Target,
    flush_callback: FlushCallback,
}

/// dm-raid1's `flush_callback_fn`: `mirror_flush`, a `REQ_PREFLUSH` to every leg.
type FlushCallback = Option<unsafe extern "C" fn(*mut raw::dm_target) -> c_int>;

impl Constructing {
    /// The target, for the log to keep.
    pub(crate) fn target(&self) -> Target {
        self.target
    }

    /// The flush of every leg that the mirror handed the log, for the log to keep; closed
    /// until the log resumes.
    pub(crate) fn leg_flush(&self) -> impl PinInit<LegFlush> + use<> {
        let (target, callback) = (self.target, self.flush_callback);
        // INVARIANT: The callback and target are the ones device-mapper gave this log's `ctr`;
        // closed, it asserts nothing about the legs.
        pin_init!(LegFlush {
            target,
            callback,
            open <- new_mutex!(false, "LegFlush::open"),
        })
    }

    /// Opens `path` (a device name or `major:minor`) as a dependency of the table.
    ///
    /// The log must drop the device before its `dtr` returns.
    pub(crate) fn get_device(&self, path: &CStr) -> Result<LogDevice> {
        let ti = self.target.0.as_ptr();
        let mut dev: *mut raw::dm_dev = core::ptr::null_mut();
        // SAFETY: `ti` is valid by `Target`'s invariant and is being constructed (this type
        // exists only during `ctr`), `path` is NUL-terminated and `dev` is a valid out-pointer.
        to_result(unsafe {
            let mode = raw::dm_table_get_mode((*ti).table);
            raw::dm_get_device(ti, path.as_char_ptr(), mode, &mut dev)
        })?;
        let dev = NonNull::new(dev).ok_or(EINVAL)?;
        // INVARIANT: `dm_get_device` succeeded, so we own one reference to `dev`.
        Ok(LogDevice {
            target: self.target,
            dev,
        })
    }
}

/// The mirror's flush of every leg (dm-raid1's `mirror_flush`, through the
/// `flush_callback_fn` the log was created with): what a log must call before it makes a clear
/// durable, because a completed write may still sit in a leg's volatile cache (dm-log.c's
/// `disk_flush` does the same).
///
/// Usable only while open: from the log's resume to its postsuspend. dm-raid1 sets up what the
/// callback uses after the log's `ctr` returns and puts the legs before the log's `dtr` runs,
/// and device-mapper postsuspends a resumed table before it destroys it.
///
/// # Invariants
///
/// `callback`, if any, is the flush callback device-mapper gave the `ctr` of the log that owns
/// this, for `target`. While `open` holds true, the log has resumed and neither postsuspended
/// nor begun its `dtr`, so the mirror's legs are open; the lock is held across each call.
#[pin_data]
pub(crate) struct LegFlush {
    target: Target,
    callback: FlushCallback,
    #[pin]
    open: Mutex<bool>,
}

impl LegFlush {
    /// Flushes every leg's volatile cache and waits for it; sleeps. `Err(EIO)` if a leg
    /// failed the flush (the mirror then fails that leg), `Err(ESHUTDOWN)` while closed.
    pub(crate) fn flush(&self) -> Result {
        let open = self.open.lock();
        if !*open {
            return Err(ESHUTDOWN);
        }
        let Some(callback) = self.callback else {
            // A target without legs to flush: nothing can be in their caches.
            return Ok(());
        };
        // SAFETY: By the type invariant `callback` is the mirror's flush for `target`, and
        // with `open` true (held locked across the call) the mirror's legs are open and its
        // context set up. The caller may sleep (documented requirement).
        to_result(unsafe { callback(self.target.0.as_ptr()) })
    }

    /// Whether [`Self::flush`] may flush the legs now.
    pub(crate) fn is_open(&self) -> bool {
        *self.open.lock()
    }

    /// The log resumed: the mirror's legs are open.
    pub(crate) fn open(&self) {
        *self.open.lock() = true;
    }

    /// The log postsuspended (or is being destroyed): from now on [`Self::flush`] fails.
    /// Waits for a flush in progress.
    pub(crate) fn close(&self) {
        *self.open.lock() = false;
    }
}

/// The log's arguments in the table line, as device-mapper lends them to `ctr`.
///
/// # Invariants
///
/// Each pointer is a NUL-terminated string that lives as long as `'a`.
pub(crate) struct Args<'a>(&'a [*mut c_char]);

impl<'a> Args<'a> {
    /// How many arguments there are.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The arguments, in table order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a CStr> + 'a {
        self.0.iter().map(|&p| {
            // SAFETY: By the type invariant `p` is a NUL-terminated string that lives for `'a`.
            unsafe { CStr::from_char_ptr(p) }
        })
    }
}

/// A device the log holds open so that it shows in the table's dependencies.
///
/// # Invariants
///
/// Owns one reference to `dev`, taken by `dm_get_device` on `target`.
pub(crate) struct LogDevice {
    target: Target,
    dev: NonNull<raw::dm_dev>,
}

// SAFETY: `dm_put_device` may be called from any task.
unsafe impl Send for LogDevice {}
// SAFETY: `LogDevice` offers no shared access to the device.
unsafe impl Sync for LogDevice {}

impl Drop for LogDevice {
    fn drop(&mut self) {
        // SAFETY: By the type invariant we own a reference on `dev` obtained from `target`,
        // which is still alive.
        unsafe { raw::dm_put_device(self.target.0.as_ptr(), self.dev.as_ptr()) };
    }
}

/// A dirty-log type and the context its constructor gets: device-mapper hands the type back in
/// every log's `type` field, so the constructor finds its context without a global.
#[repr(C)]
struct TypeWithContext<T: DirtyLog> {
    /// First, so that a pointer to it is a pointer to the whole.
    ty: Opaque<raw::dm_dirty_log_type>,
    context: T::Context,
}

impl<T: DirtyLog> TypeWithContext<T> {
    /// The type for device-mapper: a pointer to the whole, so that the `ctr` trampoline may
    /// reach the context from it.
    fn raw_type(&self) -> *mut raw::dm_dirty_log_type {
        // CAST: `ty` is the first field of this `repr(C)` struct, and `Opaque` is transparent;
        // device-mapper writes only its list links, inside the `Opaque`.
        core::ptr::from_ref(self).cast_mut().cast()
    }
}

/// A registered dirty-log type, unregistered on drop.
///
/// # Invariants
///
/// `this.ty` is registered with device-mapper until drop; its ops call `T`.
pub(crate) struct Registration<T: DirtyLog> {
    this: Pin<KBox<TypeWithContext<T>>>,
}

// SAFETY: The registered type is only touched by device-mapper under its own lock; the
// context is `Send`.
unsafe impl<T: DirtyLog> Send for Registration<T> {}
// SAFETY: As above; `Registration` offers no shared access, and the context is `Sync`.
unsafe impl<T: DirtyLog> Sync for Registration<T> {}

impl<T: DirtyLog> Registration<T> {
    /// Registers the log type `name` (device-mapper finds it by this name in tables); every
    /// log of it is constructed with `context`.
    pub(crate) fn new(
        name: &'static CStr,
        module: &'static ThisModule,
        context: T::Context,
    ) -> Result<Self> {
        let ops = raw::dm_dirty_log_type {
            name: name.as_char_ptr(),
            module: module.as_ptr(),
            ctr: Some(ctr::<T>),
            dtr: Some(dtr::<T>),
            presuspend: Some(presuspend::<T>),
            postsuspend: Some(postsuspend::<T>),
            resume: Some(resume::<T>),
            get_region_size: Some(get_region_size::<T>),
            is_clean: Some(is_clean::<T>),
            in_sync: Some(in_sync::<T>),
            flush: Some(flush::<T>),
            mark_region: Some(mark_region::<T>),
            clear_region: Some(clear_region::<T>),
            get_resync_work: Some(get_resync_work::<T>),
            set_region_sync: Some(set_region_sync::<T>),
            get_sync_count: Some(get_sync_count::<T>),
            status: Some(status::<T>),
            is_remote_recovering: Some(is_remote_recovering::<T>),
            ..Default::default()
        };
        let this = KBox::pin(
            TypeWithContext::<T> {
                ty: Opaque::new(ops),
                context,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: `this.ty` is a fully initialised type that stays at this address until drop,
        // where it is unregistered.
        to_result(unsafe { raw::dm_dirty_log_type_register(this.raw_type()) })?;
        // INVARIANT: Registered just above.
        Ok(Self { this })
    }
}

impl<T: DirtyLog> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant `ty` is registered. Device-mapper holds a reference on
        // the module for every log of this type, so none exists when the module unloads.
        unsafe { raw::dm_dirty_log_type_unregister(self.this.raw_type()) };
    }
}

/// Borrows the log of `log->context`.
///
/// # Safety
///
/// `log` must be a log of this type whose `ctr` succeeded and whose `dtr` has not run.
unsafe fn context<'a, T: DirtyLog>(log: *mut raw::dm_dirty_log) -> ArcBorrow<'a, T> {
    // SAFETY: Per the contract, `context` holds the `Arc<T>` that `ctr` stored with
    // `into_foreign` and that `dtr` has not taken back yet.
    unsafe { <Arc<T> as ForeignOwnable>::borrow((*log).context) }
}

/// # Safety
///
/// Called by device-mapper with a valid `log`, `ti`, and `argc` valid argument strings.
unsafe extern "C" fn ctr<T: DirtyLog>(
    log: *mut raw::dm_dirty_log,
    ti: *mut raw::dm_target,
    argc: c_uint,
    argv: *mut *mut c_char,
) -> c_int {
    from_result(|| {
        let ti = NonNull::new(ti).ok_or(EINVAL)?;
        let argc = usize::try_from(argc)?;
        let argv = if argc == 0 || argv.is_null() {
            &[]
        } else {
            // SAFETY: device-mapper passes `argc` argument pointers at `argv`, valid until
            // `ctr` returns.
            unsafe { core::slice::from_raw_parts(argv.cast_const(), argc) }
        };
        // INVARIANT: each pointer is a NUL-terminated string that lives until `ctr` returns,
        // and `args` is only lent to `T::ctr`.
        let args = Args(argv);
        // SAFETY: device-mapper sets `log->type` to the registered type before calling its
        // `ctr`, and that type is the `ty` field, at offset 0, of a `TypeWithContext<T>`
        // (`repr(C)`), which stays registered, so alive, while a log of it is constructed.
        let context = unsafe { &(*(*log).type_.cast::<TypeWithContext<T>>()).context };
        // SAFETY: `log` is valid per the function's contract; `dm_dirty_log_create` sets the
        // callback before it calls `ctr`.
        let flush_callback = unsafe { (*log).flush_callback_fn };
        let constructing = Constructing {
            // INVARIANT: device-mapper destroys the log before its target.
            target: Target(ti),
            flush_callback,
        };
        let this = T::ctr(context, &constructing, &args)?;
        // SAFETY: `log` is valid per the function's contract.
        unsafe { (*log).context = this.into_foreign() };
        Ok(0)
    })
}

/// # Safety
///
/// Called by device-mapper once per log whose `ctr` succeeded.
unsafe extern "C" fn dtr<T: DirtyLog>(log: *mut raw::dm_dirty_log) {
    // SAFETY: `ctr` stored an `Arc<T>` in `context`; `dtr` runs once and nothing uses the log
    // afterwards, so the reference is taken back exactly once.
    let this = unsafe { <Arc<T> as ForeignOwnable>::from_foreign((*log).context) };
    // dm-raid1 has put the legs already (it destroys the log last).
    this.leg_flush().close();
    T::dtr(this);
}

/// # Safety
///
/// Called by device-mapper on a constructed log.
unsafe extern "C" fn presuspend<T: DirtyLog>(log: *mut raw::dm_dirty_log) -> c_int {
    // SAFETY: Per the function's contract the log is constructed and not destroyed.
    from_result(|| unsafe { context::<T>(log) }.presuspend().map(|()| 0))
}

/// # Safety
///
/// Called by device-mapper on a constructed log.
unsafe extern "C" fn postsuspend<T: DirtyLog>(log: *mut raw::dm_dirty_log) -> c_int {
    // SAFETY: Per the function's contract the log is constructed and not destroyed.
    from_result(|| T::postsuspend(unsafe { context::<T>(log) }).map(|()| 0))
}

/// # Safety
///
/// Called by device-mapper on a constructed log.
unsafe extern "C" fn resume<T: DirtyLog>(log: *mut raw::dm_dirty_log) -> c_int {
    // SAFETY: Per the function's contract the log is constructed and not destroyed.
    from_result(|| T::resume(unsafe { context::<T>(log) }).map(|()| 0))
}

/// # Safety
///
/// Called by device-mapper on a constructed log.
unsafe extern "C" fn get_region_size<T: DirtyLog>(log: *mut raw::dm_dirty_log) -> u32 {
    // SAFETY: Per the function's contract the log is constructed and not destroyed.
    unsafe { context::<T>(log) }.region_size()
}

/// # Safety
///
/// Called by device-mapper on a constructed log.
unsafe extern "C" fn is_clean<T: DirtyLog>(
    log: *mut raw::dm_dirty_log,
    region: raw::region_t,
) -> c_int {
    // SAFETY: Per the function's contract the log is constructed and not destroyed.
    c_int::from(unsafe { context::<T>(log) }.is_clean(region))
}

/// # Safety
///
/// Called by device-mapper on a constructed log, possibly in atomic context when `can_block`
/// is 0.
unsafe extern "C" fn in_sync<T: DirtyLog>(
    log: *mut raw::dm_dirty_log,
    region: raw::region_t,
    can_block: c_int,
) -> c_int {
    // SAFETY: Per the function's contract the log is constructed and not destroyed.
    match unsafe { context::<T>(log) }.in_sync(region, can_block != 0) {
        Ok(b) => c_int::from(b),
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// Called by device-mapper on a constructed log.
unsafe extern "C" fn flush<T: DirtyLog>(log: *mut raw::dm_dirty_log) -> c_int {
    // SAFETY: Per the function's contract the log is constructed and not destroyed.
    from_result(|| T::flush(unsafe { context::<T>(log) }).map(|()| 0))
}

/// # Safety
///
/// Called by device-mapper on a constructed log, under a rwlock.
unsafe extern "C" fn mark_region<T: DirtyLog>(log: *mut raw::dm_dirty_log, region: raw::region_t) {
    // SAFETY: Per the function's contract the log is constructed and not destroyed.
    unsafe { context::<T>(log) }.mark_region(region)
}

/// # Safety
///
/// Called by device-mapper on a constructed log.
unsafe extern "C" fn clear_region<T: DirtyLog>(log: *mut raw::dm_dirty_log, region: raw::region_t) {
    // SAFETY: Per the function's contract the log is constructed and not destroyed.
    unsafe { context::<T>(log) }.clear_region(region)
}

/// # Safety
///
/// Called by device-mapper on a constructed log with a valid `region` out-pointer.
unsafe extern "C" fn get_resync_work<T: DirtyLog>(
    log: *mut raw::dm_dirty_log,
    region: *mut raw::region_t,
) -> c_int {
    // SAFETY: Per the function's contract the log is constructed and not destroyed.
    match unsafe { context::<T>(log) }.resync_work() {
        Ok(Some(r)) => {
            // SAFETY: `region` is a valid out-pointer per the function's contract.
            unsafe { *region = r };
            1
        }
        Ok(None) => 0,
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// Called by device-mapper on a constructed log.
unsafe extern "C" fn set_region_sync<T: DirtyLog>(
    log: *mut raw::dm_dirty_log,
    region: raw::region_t,
    in_sync: c_int,
) {
    // SAFETY: Per the function's contract the log is constructed and not destroyed.
    unsafe { context::<T>(log) }.set_region_sync(region, in_sync != 0)
}

/// # Safety
///
/// Called by device-mapper on a constructed log.
unsafe extern "C" fn get_sync_count<T: DirtyLog>(log: *mut raw::dm_dirty_log) -> raw::region_t {
    // SAFETY: Per the function's contract the log is constructed and not destroyed.
    unsafe { context::<T>(log) }.sync_count()
}

/// # Safety
///
/// Called by device-mapper on a constructed log with `result` writable for `maxlen` bytes.
unsafe extern "C" fn status<T: DirtyLog>(
    log: *mut raw::dm_dirty_log,
    kind: raw::status_type_t,
    result: *mut c_char,
    maxlen: c_uint,
) -> c_int {
    let kind = match kind {
        raw::status_type_t_STATUSTYPE_INFO => StatusKind::Info,
        raw::status_type_t_STATUSTYPE_TABLE => StatusKind::Table,
        _ => StatusKind::Ima,
    };
    let Ok(maxlen) = usize::try_from(maxlen) else {
        return 0;
    };
    if result.is_null() || maxlen == 0 {
        return 0;
    }
    // SAFETY: Per the function's contract `result` is writable for `maxlen` bytes, and
    // nothing else accesses it during the call.
    let out = unsafe { core::slice::from_raw_parts_mut(result.cast::<u8>(), maxlen) };
    // SAFETY: Per the function's contract the log is constructed and not destroyed.
    let n = unsafe { context::<T>(log) }.status(kind, out);
    c_int::try_from(n).unwrap_or(c_int::MAX)
}

/// # Safety
///
/// Called by device-mapper on a constructed log.
unsafe extern "C" fn is_remote_recovering<T: DirtyLog>(
    log: *mut raw::dm_dirty_log,
    region: raw::region_t,
) -> c_int {
    // SAFETY: Per the function's contract the log is constructed and not destroyed.
    c_int::from(unsafe { context::<T>(log) }.is_remote_recovering(region))
}
