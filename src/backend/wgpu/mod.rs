//! The GPU backend: WGSL compute kernels through wgpu (Vulkan, Metal, DX12).
//!
//! `prepare` lowers the executor's kernel list (see [`lower`]) and creates everything a step
//! needs — pipelines (cached per device by family and entry point), one small parameter buffer
//! per dispatch holding its family's typed parameter struct (see [`kernels`]), bind groups —
//! once. `execute` writes the per-step values, records every dispatch into one compute pass,
//! copies the fetched views to a staging buffer in the same encoder, and submits once. Nothing
//! is created on the hot path except the command encoder.

pub mod autotune;
pub mod kernels;
pub mod lower;
mod profile;

use super::{dead_after, overlap, Backend, DeviceInfo, Kernel, MemoryLimits, StepUniforms, View};
use crate::error::{Error, Result};
use crate::graph::Op;
use crate::optim::OptimizerKind;
use crate::shape::DType;
use kernels::{matmul, Dispatch, Family, Grid, Step, Storage, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Bindings of the standard layout: params, per_step, a, b, c, out, a as vec4, b as vec4.
const STD_SLOTS: u32 = 8;
/// The one written binding of the standard layout.
const STD_OUT: u32 = 5;
const MAX_GROUPS: usize = 65535;

/// A wgpu device with Kiln's pipeline cache.
#[derive(Clone)]
pub struct Gpu {
    inner: Arc<Inner>,
}

struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    std_layout: wgpu::BindGroupLayout,
    update_layout: wgpu::BindGroupLayout,
    std_pipeline_layout: wgpu::PipelineLayout,
    update_pipeline_layout: wgpu::PipelineLayout,
    modules: Mutex<HashMap<(Family, Storage), wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    /// Pipelines compiled only to be timed by the autotuner; moved to `pipelines` if chosen.
    trials: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    tuner: autotune::Tuner,
    /// Pipelines of generated sources (fused kernels), by source.
    generated: Mutex<HashMap<GeneratedKey, wgpu::ComputePipeline>>,
    /// How f16 tensors are stored: natively with `SHADER_F16`, else packed in u32 words.
    f16: Store,
    dummy_ro: wgpu::Buffer,
    dummy_rw: [wgpu::Buffer; 3],
    errors: Arc<Mutex<Vec<String>>>,
    lost: Arc<Mutex<Option<String>>>,
}

/// A generated pipeline: its source, entry point and override constants.
type GeneratedKey = (Arc<str>, &'static str, Vec<(&'static str, u32)>);

/// A pipeline: its family, entry point, tensor storage and override constants.
type PipelineKey = (Family, &'static str, Storage, Vec<(&'static str, u32)>);

/// A device buffer (a multiple of 4 bytes).
#[derive(Clone, Debug)]
pub struct GpuBuffer {
    buf: wgpu::Buffer,
    bytes: usize,
}

struct Prepared {
    /// Entry point, launch size and leading parameter fields (sizes), for the profile.
    label: String,
    /// Family, entry point (with its variant) and cost, for the profile's roofline.
    kind: profile::Kind,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
}

/// A product dispatched with its fused epilogue, and the two dispatches it replaces, run instead
/// when a fetch reads the product itself (which the merged dispatch never stores).
struct Alternate {
    /// Index of the merged dispatch.
    at: usize,
    /// The product's view (bytes), as the kernels name it.
    product: View,
    /// The product's dispatch and the fused kernel's, prepared on the first step that needs
    /// them (most programs never fetch a product, and each pipeline is a compile).
    pair: [Dispatch; 2],
    prepared: Option<[Prepared; 2]>,
}

/// A prepared kernel list.
pub struct GpuProgram {
    dispatches: Vec<Prepared>,
    alternates: Vec<Alternate>,
    step: wgpu::Buffer,
    rule: Option<OptimizerKind>,
    buffers: Vec<GpuBuffer>,
    staging: Option<(wgpu::Buffer, usize)>,
    /// With `KILN_PROFILE=1`: seconds and runs of each dispatch (each submitted and waited for
    /// on its own, so only for finding hot kernels and their roofline, never for throughput).
    profile: Option<Vec<(f64, usize)>>,
}

impl GpuProgram {
    /// Each dispatch's entry point, with its variant where it has one (`matmul [tiled 64x64x16
    /// r4x4]`), in order.
    pub fn entries(&self) -> Vec<String> {
        self.dispatches.iter().map(|d| d.kind.entry.clone()).collect()
    }
}

impl Drop for GpuProgram {
    fn drop(&mut self) {
        if let Some(p) = self.profile.as_ref().filter(|p| p.iter().any(|&(_, runs)| runs > 0)) {
            let rows: Vec<profile::Row> = self
                .dispatches
                .iter()
                .zip(p)
                .map(|(d, &(seconds, runs))| profile::Row {
                    label: &d.label,
                    kind: &d.kind,
                    seconds,
                    runs,
                })
                .collect();
            eprint!("{}", profile::report(&rows));
        }
    }
}

/// One adapter wgpu can see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterSummary {
    /// Its name.
    pub name: String,
    /// Vulkan, Metal, DX12, ...
    pub backend: String,
    /// Discrete, integrated, virtual, CPU (software), other.
    pub device_type: String,
    /// Largest storage buffer binding, bytes.
    pub max_storage_binding: u64,
    /// Largest buffer, bytes.
    pub max_buffer: u64,
    /// Most invocations in one workgroup.
    pub max_invocations: u32,
    /// Workgroup memory, bytes.
    pub max_workgroup_memory: u32,
}

fn instance() -> wgpu::Instance {
    #[cfg(target_os = "linux")]
    quiet_wayland::install();
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
    wgpu::Instance::new(desc)
}

/// Silencing libwayland-client's complaint about a Wayland connection that cannot exist.
///
/// wgpu enables `VK_KHR_wayland_surface`, so Mesa's implicit Vulkan layer
/// `VK_LAYER_MESA_device_select` calls `wl_display_connect()` inside
/// `vkEnumeratePhysicalDevices`. Without a Wayland session (a CI machine, a container, ssh)
/// libwayland-client logs `error: XDG_RUNTIME_DIR is invalid or not set in the environment.`
/// to stderr through its default log handler — twice per enumeration, on runs that never show a
/// window. That line is not Kiln's and says nothing about Kiln's run, so when a connection is
/// impossible anyway we replace the client log handler with one that drops the message.
///
/// The test mirrors libwayland's own: `wl_display_connect` uses `WAYLAND_SOCKET` when set,
/// else `WAYLAND_DISPLAY` (or `wayland-0`), which needs `$XDG_RUNTIME_DIR` unless it is an
/// absolute path. Only if none of those can lead to a socket is the handler installed, so a
/// process that can talk to a compositor keeps its Wayland diagnostics. No environment variable
/// is changed: `set_var` races with every other thread reading the environment.
#[cfg(target_os = "linux")]
mod quiet_wayland {
    use std::ffi::{c_char, c_void, OsString};
    use std::path::Path;
    use std::sync::Once;

    /// `wl_log_func_t`: `void (*)(const char *fmt, va_list args)`. `va_list` is passed as a
    /// pointer here: on x86_64 it is an array type, which decays to a pointer in argument
    /// position, and on aarch64 a 32-byte struct, which AAPCS64 passes by reference. The handler
    /// reads neither argument, so their exact types never matter.
    type LogFn = unsafe extern "C" fn(*const c_char, *mut c_void);

    unsafe extern "C" fn drop_message(_fmt: *const c_char, _args: *mut c_void) {}

    /// Whether `wl_display_connect(NULL)` must fail for lack of a socket to try.
    pub(super) fn connection_impossible(
        runtime_dir: Option<OsString>,
        socket: Option<OsString>,
        display: Option<OsString>,
    ) -> bool {
        let runtime_ok = runtime_dir.is_some_and(|d| Path::new(&d).is_absolute() && Path::new(&d).is_dir());
        let display_absolute = display.is_some_and(|d| Path::new(&d).is_absolute());
        !runtime_ok && socket.is_none() && !display_absolute
    }

    /// Once per process, before the first adapter enumeration.
    pub(super) fn install() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            let env = std::env::var_os;
            if !connection_impossible(env("XDG_RUNTIME_DIR"), env("WAYLAND_SOCKET"), env("WAYLAND_DISPLAY")) {
                return;
            }
            // SAFETY: loading libwayland-client runs only its own initialisers (it has no
            // side effects at load). The symbol's type is `void wl_log_set_handler_client(
            // wl_log_func_t)`, matched by the signature below, and the handler is a plain
            // `extern "C"` function with a 'static lifetime.
            unsafe {
                let Ok(lib) = libloading::Library::new("libwayland-client.so.0") else {
                    return; // No libwayland: nothing will log.
                };
                if let Ok(set) = lib.get::<unsafe extern "C" fn(LogFn)>(b"wl_log_set_handler_client\0") {
                    set(drop_message);
                }
                // Keep the library loaded: the handler lives in its globals, which the Vulkan
                // layer's later load of the same soname shares; unloading would reset them.
                std::mem::forget(lib);
            }
        });
    }

    #[cfg(test)]
    mod tests {
        use super::connection_impossible;

        #[test]
        fn a_connection_is_impossible_only_without_any_socket_to_try() {
            let s = |v: &str| Some(v.into());
            assert!(connection_impossible(None, None, None));
            assert!(connection_impossible(None, None, s("wayland-0")));
            assert!(connection_impossible(s("relative/dir"), None, None));
            assert!(connection_impossible(s("/no/such/kiln/dir"), None, None));
            // A runtime directory, an inherited socket or an absolute display path may connect.
            let dir = std::env::temp_dir().into_os_string();
            assert!(!connection_impossible(Some(dir), None, None));
            assert!(!connection_impossible(None, s("3"), None));
            assert!(!connection_impossible(None, None, s("/run/user/1000/wayland-0")));
        }
    }
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// Every adapter wgpu can see, best first.
pub fn adapters() -> Vec<AdapterSummary> {
    let mut v = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
    v.sort_by_key(|a| rank(a.get_info().device_type));
    v.iter()
        .map(|a| {
            let (i, l) = (a.get_info(), a.limits());
            AdapterSummary {
                name: i.name,
                backend: format!("{:?}", i.backend),
                device_type: format!("{:?}", i.device_type),
                max_storage_binding: l.max_storage_buffer_binding_size,
                max_buffer: l.max_buffer_size,
                max_invocations: l.max_compute_invocations_per_workgroup,
                max_workgroup_memory: l.max_compute_workgroup_storage_size,
            }
        })
        .collect()
}

fn storage(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

impl Gpu {
    /// Open the best adapter: the first whose name contains `name` when given, else a discrete
    /// GPU, then integrated, virtual, other, and a software one (lavapipe, WARP) last.
    pub fn new(name: Option<&str>) -> Result<Gpu> {
        let packed = std::env::var("KILN_F16").as_deref() == Ok("packed");
        Self::new_with(name, packed)
    }

    /// Like [`Gpu::new`], but storing f16 tensors packed two to a u32 word even where the
    /// adapter has `SHADER_F16`: the path adapters without it take, so it can be tested on any.
    pub fn new_packed_f16(name: Option<&str>) -> Result<Gpu> {
        Self::new_with(name, true)
    }

    /// Like [`Gpu::new`], with matmul variants chosen by `mode` instead of `KILN_AUTOTUNE`.
    pub fn with_autotune(name: Option<&str>, mode: autotune::Mode) -> Result<Gpu> {
        let packed = std::env::var("KILN_F16").as_deref() == Ok("packed");
        Self::find(name, packed, mode)
    }

    fn new_with(name: Option<&str>, packed_f16: bool) -> Result<Gpu> {
        Self::find(name, packed_f16, autotune::Mode::from_env())
    }

    fn find(name: Option<&str>, packed_f16: bool, mode: autotune::Mode) -> Result<Gpu> {
        let inst = instance();
        let mut all = pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()));
        all.sort_by_key(|a| rank(a.get_info().device_type));
        let adapter = match name {
            Some(n) => all
                .into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&n.to_lowercase())),
            None => all.into_iter().next(),
        }
        .ok_or_else(|| {
            Error::Backend(match name {
                Some(n) => {
                    let found: Vec<String> = adapters()
                        .into_iter()
                        .map(|a| format!("{} ({})", a.name, a.backend))
                        .collect();
                    format!(
                        "no GPU adapter's name contains `{n}` (KILN_ADAPTER); the adapters found are: {}",
                        if found.is_empty() {
                            "none".to_string()
                        } else {
                            found.join(", ")
                        }
                    )
                }
                None => {
                    "no GPU adapter found (on Linux, Mesa's lavapipe comes with the mesa-vulkan-drivers package)".into()
                }
            })
        })?;
        Self::open(adapter, packed_f16, mode)
    }

    fn open(adapter: wgpu::Adapter, packed_f16: bool, mode: autotune::Mode) -> Result<Gpu> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        // f16 tensors: WGSL's f16 where the adapter has it, unless KILN_F16=packed asks for the
        // fallback every adapter runs (u32 words through pack2x16float / unpack2x16float).
        let native = adapter.features().contains(wgpu::Features::SHADER_F16) && !packed_f16;
        let f16 = if native { Store::F16 } else { Store::F16Packed };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("kiln"),
            required_features: if native {
                wgpu::Features::SHADER_F16
            } else {
                wgpu::Features::empty()
            },
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| Error::Backend(format!("{}: cannot open the device: {e}", info.name)))?;
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let lost: Arc<Mutex<Option<String>>> = Arc::default();
        let e2 = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = e2.lock() {
                v.push(e.to_string());
            }
        }));
        let l2 = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if let Ok(mut l) = l2.lock() {
                *l = Some(format!("{reason:?}: {msg}"));
            }
        });
        let std_entries: Vec<_> = (0..STD_SLOTS).map(|b| storage(b, b != STD_OUT)).collect();
        let update_entries: Vec<_> = (0..8).map(|b| storage(b, b < 4)).collect();
        let std_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("kiln std"),
            entries: &std_entries,
        });
        let update_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("kiln update"),
            entries: &update_entries,
        });
        let pl = |l: &wgpu::BindGroupLayout| {
            device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: None,
                bind_group_layouts: &[Some(l)],
                immediate_size: 0,
            })
        };
        let std_pipeline_layout = pl(&std_layout);
        let update_pipeline_layout = pl(&update_layout);
        let small = |label: &str| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let dummy_ro = small("dummy ro");
        let dummy_rw = [small("dummy rw 0"), small("dummy rw 1"), small("dummy rw 2")];
        let fingerprint = format!(
            "{} | {} | {} | {:?}",
            info.name, info.driver, info.driver_info, info.backend
        );
        Ok(Gpu {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                limits,
                std_layout,
                update_layout,
                std_pipeline_layout,
                update_pipeline_layout,
                modules: Mutex::default(),
                pipelines: Mutex::default(),
                generated: Mutex::default(),
                trials: Mutex::default(),
                tuner: autotune::Tuner::new(mode, &fingerprint),
                f16,
                dummy_ro,
                dummy_rw,
                errors,
                lost,
            }),
        })
    }

    /// The autotuner: its mode, cache file and choices (see [`autotune`]).
    pub fn tuner(&self) -> &autotune::Tuner {
        &self.inner.tuner
    }

    /// Whether this is a software adapter (lavapipe, WARP).
    pub fn is_software(&self) -> bool {
        self.inner.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Distinct pipelines that prepared programs use (each one is a shader compile; the
    /// autotuner's trial compiles are not counted unless chosen).
    pub fn pipeline_count(&self) -> usize {
        self.inner.pipelines.lock().map_or(0, |p| p.len()) + self.inner.generated.lock().map_or(0, |p| p.len())
    }

    /// Errors wgpu reported outside an error scope, or device loss, as an `Err`.
    fn check(&self, what: &str) -> Result<()> {
        if let Some(l) = self.inner.lost.lock().ok().and_then(|l| l.clone()) {
            return Err(Error::Backend(format!("{what}: the device was lost ({l})")));
        }
        let errs: Vec<String> = self
            .inner
            .errors
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default();
        if !errs.is_empty() {
            return Err(Error::Backend(format!("{what}: {}", errs.join("; "))));
        }
        Ok(())
    }

    /// How this device stores the element types of a dispatch's tensor bindings.
    fn storage(&self, dtypes: [DType; 4]) -> Storage {
        Storage(dtypes.map(|d| match d {
            DType::F32 | DType::U32 => Store::Word,
            DType::F16 => self.inner.f16,
        }))
    }

    /// Whether f16 tensors use WGSL's `f16` (the adapter has `SHADER_F16`) rather than words
    /// packed with `pack2x16float`.
    pub fn native_f16(&self) -> bool {
        self.inner.f16 == Store::F16
    }

    /// The pipeline, bind group and launch size of `d`, its parameters uploaded.
    fn prepare_dispatch(&self, d: &Dispatch, step: &wgpu::Buffer, raw: &[wgpu::Buffer]) -> Result<Prepared> {
        // Parameter structs are made of 4-byte fields, so their size is a multiple of 4.
        let params = self.raw(
            d.params.len(),
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            d.entry,
        );
        self.inner.queue.write_buffer(&params, 0, &d.params);
        let groups = self.groups(d.grid)?;
        // The leading fields (sizes, mostly) label the dispatch in the profile.
        let words: Vec<u32> = d
            .params
            .chunks_exact(4)
            .take(3)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let kind = profile::Kind::of(d);
        let (pipeline, bind_group) = match &d.source {
            Some(src) => {
                let p = self.generated_pipeline(src, d.entry, &d.constants)?;
                let b = self.bind_generated(d, &p, &params, raw);
                (p, b)
            }
            None => (
                self.pipeline(d.family, d.entry, self.storage(d.dtypes), &d.constants)?,
                self.bind(d, &params, step, raw),
            ),
        };
        Ok(Prepared {
            label: format!("{} {groups:?} {words:?}", kind.entry),
            kind,
            pipeline,
            bind_group,
            groups,
        })
    }

    /// The pipeline of a dispatch with a generated source, its bind group layout derived from
    /// the source (each generated kernel binds its own set of buffers), with override
    /// `constants` (a product with an epilogue keeps its variant's).
    fn generated_pipeline(
        &self,
        src: &Arc<str>,
        entry: &'static str,
        constants: &[(&'static str, u32)],
    ) -> Result<wgpu::ComputePipeline> {
        let mut cache = self
            .inner
            .generated
            .lock()
            .map_err(|_| Error::Backend("pipeline cache poisoned".into()))?;
        let key = (src.clone(), entry, constants.to_vec());
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let d = &self.inner.device;
        let module = shader_module(d, entry, src.to_string());
        let values: Vec<(&str, f64)> = constants.iter().map(|&(k, v)| (k, v as f64)).collect();
        let p = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &values,
                ..Default::default()
            },
            cache: None,
        });
        cache.insert(key, p.clone());
        Ok(p)
    }

    /// The pipeline of `entry` with override `constants`, created once per device. A pipeline
    /// the autotuner compiled for a trial is taken over rather than compiled again.
    fn pipeline(
        &self,
        family: Family,
        entry: &'static str,
        st: Storage,
        constants: &[(&'static str, u32)],
    ) -> Result<wgpu::ComputePipeline> {
        let key = (family, entry, st, constants.to_vec());
        let mut cache = self
            .inner
            .pipelines
            .lock()
            .map_err(|_| Error::Backend("pipeline cache poisoned".into()))?;
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let trial = self.inner.trials.lock().ok().and_then(|mut t| t.remove(&key));
        let p = match trial {
            Some(p) => p,
            None => self.compile(&key)?,
        };
        cache.insert(key, p.clone());
        Ok(p)
    }

    /// A pipeline for the autotuner to time, kept apart from the program's (see `pipeline`).
    fn trial_pipeline(
        &self,
        family: Family,
        entry: &'static str,
        st: Storage,
        constants: &[(&'static str, u32)],
    ) -> Result<wgpu::ComputePipeline> {
        let key = (family, entry, st, constants.to_vec());
        if let Some(p) = self.inner.pipelines.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(p);
        }
        let mut trials = self
            .inner
            .trials
            .lock()
            .map_err(|_| Error::Backend("pipeline cache poisoned".into()))?;
        if let Some(p) = trials.get(&key) {
            return Ok(p.clone());
        }
        let p = self.compile(&key)?;
        trials.insert(key, p.clone());
        Ok(p)
    }

    fn compile(&self, (family, entry, st, constants): &PipelineKey) -> Result<wgpu::ComputePipeline> {
        let (family, entry, st) = (*family, *entry, *st);
        let d = &self.inner.device;
        let mut modules = self
            .inner
            .modules
            .lock()
            .map_err(|_| Error::Backend("module cache poisoned".into()))?;
        let module = modules
            .entry((family, st))
            .or_insert_with(|| shader_module(d, entry, family.source_with(st)))
            .clone();
        let layout = if family == Family::Optim {
            &self.inner.update_pipeline_layout
        } else {
            &self.inner.std_pipeline_layout
        };
        let values: Vec<(&str, f64)> = constants.iter().map(|&(k, v)| (k, v as f64)).collect();
        Ok(d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(layout),
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &values,
                ..Default::default()
            },
            cache: None,
        }))
    }

    fn groups(&self, grid: Grid) -> Result<[u32; 3]> {
        let flat = |g: usize| -> Result<[u32; 3]> {
            let max = (self.inner.limits.max_compute_workgroups_per_dimension as usize).min(MAX_GROUPS);
            if g <= max {
                return Ok([g as u32, 1, 1]);
            }
            let y = g.div_ceil(max);
            if y > max {
                return Err(Error::Backend(format!(
                    "{g} workgroups exceed the adapter's {max}×{max} grid"
                )));
            }
            Ok([max as u32, y as u32, 1])
        };
        match grid {
            Grid::Elements(n) => flat(n.div_ceil(256)),
            Grid::Groups(n) => flat(n),
            Grid::Fixed(g) => Ok(g),
        }
    }

    /// A generated kernel's bind group: the parameters, then its inputs and outputs in order.
    fn bind_generated(
        &self,
        d: &Dispatch,
        pipeline: &wgpu::ComputePipeline,
        params: &wgpu::Buffer,
        bufs: &[wgpu::Buffer],
    ) -> wgpu::BindGroup {
        let res: Vec<&wgpu::Buffer> = std::iter::once(params)
            .chain(d.inputs.iter().chain(&d.outputs).map(|&b| &bufs[b]))
            .collect();
        let entries: Vec<wgpu::BindGroupEntry> = res
            .iter()
            .enumerate()
            .map(|(b, buf)| wgpu::BindGroupEntry {
                binding: b as u32,
                resource: buf.as_entire_binding(),
            })
            .collect();
        self.inner.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(d.entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    }

    fn bind(&self, d: &Dispatch, params: &wgpu::Buffer, step: &wgpu::Buffer, bufs: &[wgpu::Buffer]) -> wgpu::BindGroup {
        let i = &self.inner;
        let mut res: Vec<&wgpu::Buffer> = vec![params, step];
        if d.family == Family::Optim {
            res.push(&bufs[d.inputs[0]]);
            res.push(d.inputs.get(1).map_or(&i.dummy_ro, |&b| &bufs[b]));
            res.push(&bufs[d.outputs[0]]);
            res.push(d.outputs.get(1).map_or(&i.dummy_rw[0], |&b| &bufs[b]));
            res.push(d.outputs.get(2).map_or(&i.dummy_rw[1], |&b| &bufs[b]));
            res.push(d.outputs.get(3).map_or(&i.dummy_rw[2], |&b| &bufs[b]));
        } else {
            for s in 0..3 {
                res.push(d.inputs.get(s).map_or(&i.dummy_ro, |&b| &bufs[b]));
            }
            res.push(&bufs[d.outputs[0]]);
            // The vec4 views of the first two inputs (read by matmul only).
            for s in 0..2 {
                res.push(if d.family == Family::Matmul {
                    &bufs[d.inputs[s]]
                } else {
                    &i.dummy_ro
                });
            }
        }
        let entries: Vec<wgpu::BindGroupEntry> = res
            .iter()
            .enumerate()
            .map(|(b, buf)| wgpu::BindGroupEntry {
                binding: b as u32,
                resource: buf.as_entire_binding(),
            })
            .collect();
        let layout = if d.family == Family::Optim {
            &i.update_layout
        } else {
            &i.std_layout
        };
        i.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(d.entry),
            layout,
            entries: &entries,
        })
    }

    /// A buffer of `bytes` bytes (at least 16).
    fn raw(&self, bytes: usize, usage: wgpu::BufferUsages, label: &str) -> wgpu::Buffer {
        self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.div_ceil(4).max(4) as u64 * 4,
            usage,
            mapped_at_creation: false,
        })
    }

    fn map_read(&self, staging: &wgpu::Buffer, bytes: usize) -> Result<Vec<u8>> {
        let slice = staging.slice(..bytes as u64);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.inner
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: None,
            })
            .map_err(|e| Error::Backend(format!("waiting for the device: {e}")))?;
        rx.recv()
            .map_err(|_| Error::Backend("the map callback never ran".into()))?
            .map_err(|e| Error::Backend(format!("mapping the staging buffer: {e}")))?;
        let out = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| Error::Backend(format!("reading the staging buffer: {e:?}")))?;
            view.to_vec()
        };
        staging.unmap();
        Ok(out)
    }
}

/// The kernel with its views counted in elements of their type, as the WGSL kernels index
/// their arrays (an f16 index is the half-word's; packed storage divides it by two itself).
fn in_elements(k: &Kernel) -> std::result::Result<Kernel, String> {
    let conv = |v: &View| -> std::result::Result<View, String> {
        Ok(View {
            offset: v.first(),
            ..*v
        })
    };
    let all = |vs: &[View]| vs.iter().map(conv).collect::<std::result::Result<Vec<_>, _>>();
    Ok(match k {
        Kernel::Op {
            op,
            inputs,
            in_shapes,
            out,
            out_shape,
            node,
        } => Kernel::Op {
            op: op.clone(),
            inputs: all(inputs)?,
            in_shapes: in_shapes.clone(),
            out: conv(out)?,
            out_shape: out_shape.clone(),
            node: *node,
        },
        Kernel::Copy { src, dst } => Kernel::Copy {
            src: conv(src)?,
            dst: conv(dst)?,
        },
        Kernel::GradStats { src, check, out } => Kernel::GradStats {
            src: all(src)?,
            check: all(check)?,
            out: conv(out)?,
        },
        Kernel::AddInto { src, dst } => Kernel::AddInto {
            src: conv(src)?,
            dst: conv(dst)?,
        },
        Kernel::CopyIfFinite { src, dst, stats } => Kernel::CopyIfFinite {
            src: conv(src)?,
            dst: conv(dst)?,
            stats: conv(stats)?,
        },
        Kernel::Fill { dst, value } => Kernel::Fill {
            dst: conv(dst)?,
            value: *value,
        },
        Kernel::Update(u) => Kernel::Update(crate::backend::UpdateKernel {
            stats: conv(&u.stats)?,
            ..u.clone()
        }),
        Kernel::Fused(f) => Kernel::Fused(crate::backend::Fused {
            inputs: f
                .inputs
                .iter()
                .map(|(v, s)| Ok((conv(v)?, s.clone())))
                .collect::<std::result::Result<_, String>>()?,
            outputs: f
                .outputs
                .iter()
                .map(|(i, v)| Ok((*i, conv(v)?)))
                .collect::<std::result::Result<_, String>>()?,
            ..f.clone()
        }),
    })
}

/// Kernels `i` and `i + 1` (dispatches `first` and `second`) as one dispatch, if they can be
/// one: see [`Gpu::prepare`]. With the first's result's view when the pair is an op and its
/// epilogue (run apart when a step fetches that result).
fn merge_pair(
    kernels: &[Kernel],
    i: usize,
    first: &Dispatch,
    second: &Dispatch,
    limit: u32,
) -> Result<Option<(Dispatch, Option<View>)>> {
    let err = Error::Backend;
    if let Some(d) = kernels::conv::pool_with_values(first, second).map_err(err)? {
        return Ok(Some((d, None)));
    }
    let fused = |k: &Kernel| -> Result<Option<crate::backend::Fused>> {
        match as_fused(k)
            .map(|f| in_elements(&Kernel::Fused(f)))
            .transpose()
            .map_err(err)?
        {
            Some(Kernel::Fused(f)) => Ok(Some(f)),
            _ => Ok(None),
        }
    };
    if let Some((head, c)) = epilogue_of(kernels, i) {
        if let Some(f) = fused(&kernels[i + 1])? {
            let d = match first.family {
                Family::Matmul => matmul::with_epilogue(first, &f, head, limit),
                Family::Conv => kernels::conv::with_epilogue(first, &f, head, limit),
                _ => Ok(None),
            };
            if let Some(d) = d.map_err(err)? {
                return Ok(Some((d, Some(c))));
            }
        }
    }
    if let Some(value) = prologue_of(kernels, i) {
        if let Some(f) = fused(&kernels[i])? {
            if let Some(d) = kernels::reduce::with_prologue(second, &f, value, limit).map_err(err)? {
                return Ok(Some((d, None)));
            }
        }
    }
    Ok(None)
}

/// Whether kernel `i + 1` reduces a value that the fused kernel `i` stores, over the fused
/// kernel's whole index space, into storage that kernel neither reads nor writes: then the
/// reduction may compute that kernel's elements as it loads them (`reduce::with_prologue`).
/// Returns which of its stored values is reduced.
fn prologue_of(kernels: &[Kernel], i: usize) -> Option<usize> {
    let (
        Some(f),
        Some(Kernel::Op {
            op: Op::Reduce { .. },
            inputs,
            out,
            ..
        }),
    ) = (as_fused(&kernels[i]), kernels.get(i + 1))
    else {
        return None;
    };
    let [x] = inputs[..] else { return None };
    let value = f.outputs.iter().position(|(_, v)| *v == x)?;
    let mut touched = f.inputs.iter().map(|(v, _)| v).chain(f.outputs.iter().map(|(_, v)| v));
    (x.dtype == DType::F32 && x.len == f.len() && !touched.any(|v| overlap(v, out))).then_some(value)
}

/// Whether kernel `i` is an op (a product, a pooling gradient) whose result only the fused kernel
/// `i + 1` reads, as that kernel's whole index space: then the two may be one dispatch that never
/// stores the result, if the op's dispatch can take an epilogue (`matmul::with_epilogue`,
/// `conv::with_epilogue`). Returns the fused kernel's operand that is the result, and the
/// result's view. The result must be dead once the fused kernel has run (a stored value of it
/// covers the result's storage, or no later kernel reads that storage before it is rewritten);
/// a fetch of it is handled at run time ([`Alternate`]).
fn epilogue_of(kernels: &[Kernel], i: usize) -> Option<(usize, View)> {
    let (Kernel::Op { out: c, .. }, Some(f)) = (&kernels[i], kernels.get(i + 1).and_then(as_fused)) else {
        return None;
    };
    if c.dtype != DType::F32 || f.len() != c.len {
        return None;
    }
    let reads: Vec<usize> = (0..f.inputs.len()).filter(|&k| overlap(&f.inputs[k].0, c)).collect();
    let [head] = reads[..] else { return None };
    let (v, strides) = &f.inputs[head];
    if v != c || *strides != f.shape.strides() {
        return None;
    }
    let outs: Vec<&View> = f.outputs.iter().map(|(_, v)| v).collect();
    if outs.iter().any(|o| overlap(o, c) && *o != c) {
        return None;
    }
    (outs.contains(&c) || dead_after(kernels, i + 1, c)).then_some((head, *c))
}

/// `k` as a fused kernel: itself, or a lone element-wise op (a bias add the fusion pass left on
/// its own, with nothing to fuse it with) as a run of one.
fn as_fused(k: &Kernel) -> Option<crate::backend::Fused> {
    match k {
        Kernel::Fused(f) => Some(f.clone()),
        Kernel::Op {
            op: op @ (Op::Unary(_) | Op::UnaryGrad(_) | Op::Binary(_)),
            inputs,
            in_shapes,
            out,
            out_shape,
            node,
        } if out.dtype == DType::F32 && inputs.iter().all(|v| v.dtype == DType::F32) => Some(crate::backend::Fused {
            shape: out_shape.clone(),
            inputs: inputs
                .iter()
                .zip(in_shapes)
                .map(|(v, s)| (*v, crate::shape::broadcast_strides(s, out_shape)))
                .collect(),
            body: vec![(op.clone(), (0..inputs.len()).collect())],
            outputs: vec![(inputs.len(), *out)],
            nodes: vec![*node],
        }),
        _ => None,
    }
}

fn out_view(k: &Kernel) -> Option<View> {
    match k {
        Kernel::Op { out, .. } => Some(*out),
        Kernel::Copy { dst, .. } => Some(*dst),
        Kernel::GradStats { out, .. } => Some(*out),
        Kernel::AddInto { dst, .. } => Some(*dst),
        Kernel::Fill { dst, .. } => Some(*dst),
        Kernel::CopyIfFinite { dst, .. } => Some(*dst),
        // A fused kernel binds each buffer once, read-write where it stores a value.
        Kernel::Update(_) | Kernel::Fused(_) => None,
    }
}

impl Backend for Gpu {
    type Buffer = GpuBuffer;
    type Program = GpuProgram;

    fn info(&self) -> DeviceInfo {
        let i = &self.inner.info;
        DeviceInfo {
            backend: "wgpu".into(),
            adapter: format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type),
        }
    }

    fn memory_limits(&self) -> MemoryLimits {
        let l = &self.inner.limits;
        MemoryLimits {
            max_buffer: l.max_storage_buffer_binding_size.min(l.max_buffer_size) as usize,
            // wgpu does not say how much device memory there is.
            total: None,
        }
    }

    fn alloc(&self, bytes: usize, label: &str) -> Result<GpuBuffer> {
        let bytes = bytes.div_ceil(4) * 4;
        let max = self.memory_limits().max_buffer;
        if bytes > max {
            return Err(Error::OutOfMemory(format!(
                "`{label}` needs {bytes} bytes but {} binds at most {max} bytes per storage buffer",
                self.inner.info.name
            )));
        }
        let scope = self.inner.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buf = self.raw(
            bytes,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            label,
        );
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Backend(format!("allocating `{label}` ({bytes} bytes): {e}")));
        }
        Ok(GpuBuffer { buf, bytes })
    }

    fn write(&self, b: &GpuBuffer, offset: usize, data: &[u8]) -> Result<()> {
        if !offset.is_multiple_of(4) || offset + data.len() > b.bytes {
            return Err(Error::Backend(format!(
                "write of {} bytes at {offset} does not fit a buffer of {} bytes (offsets are multiples of 4)",
                data.len(),
                b.bytes
            )));
        }
        if !data.is_empty() {
            // Copies move whole words: pad a ragged tail (an odd number of f16) with zeros,
            // which lands in the padding every tensor's allocation is rounded up to.
            if data.len().is_multiple_of(4) {
                self.inner.queue.write_buffer(&b.buf, offset as u64, data);
            } else {
                let mut padded = data.to_vec();
                padded.resize(data.len().div_ceil(4) * 4, 0);
                self.inner.queue.write_buffer(&b.buf, offset as u64, &padded);
            }
        }
        self.check("write")
    }

    fn read(&self, b: &GpuBuffer, offset: usize, bytes: usize) -> Result<Vec<u8>> {
        let words = bytes.div_ceil(4) * 4;
        if !offset.is_multiple_of(4) || offset + words > b.bytes {
            return Err(Error::Backend(format!(
                "read of {bytes} bytes at {offset} does not fit a buffer of {} bytes",
                b.bytes
            )));
        }
        let staging = self.raw(
            words,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            "read staging",
        );
        let mut enc = self.inner.device.create_command_encoder(&Default::default());
        if words > 0 {
            enc.copy_buffer_to_buffer(&b.buf, offset as u64, &staging, 0, words as u64);
        }
        self.inner.queue.submit(std::iter::once(enc.finish()));
        let mut v = if words > 0 {
            self.map_read(&staging, words)?
        } else {
            Vec::new()
        };
        v.truncate(bytes);
        self.check("read")?;
        Ok(v)
    }

    fn prepare(&self, mut buffers: Vec<GpuBuffer>, kernels: Vec<Kernel>) -> Result<GpuProgram> {
        let scope = self.inner.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let step = self.raw(
            std::mem::size_of::<Step>(),
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            "step values",
        );
        let mut rule = None;
        let mut planned: Vec<Dispatch> = Vec::new();
        // Each kernel's first dispatch and count in `planned`.
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(kernels.len());
        for k in &kernels {
            if let Kernel::Update(u) = k {
                rule = Some(u.rule);
            }
            let start = planned.len();
            let k = &in_elements(k).map_err(Error::Backend)?;
            let mut ds = lower::lower(k).map_err(Error::Backend)?;
            // A kernel may not read the buffer it writes in the same dispatch: write to a
            // scratch twin of that buffer, then copy the written range across.
            if let Some(out) = out_view(k) {
                if ds.iter().any(|d| d.inputs.contains(&out.buf)) {
                    let scratch = self.alloc(buffers[out.buf].bytes, "alias scratch")?;
                    buffers.push(scratch);
                    let s = buffers.len() - 1;
                    for d in &mut ds {
                        d.outputs = vec![s];
                    }
                    ds.extend(
                        lower::lower(&Kernel::Copy {
                            src: View { buf: s, ..out },
                            dst: out,
                        })
                        .map_err(Error::Backend)?,
                    );
                }
            }
            planned.extend(ds);
            spans.push((start, planned.len() - start));
        }
        let raw: Vec<wgpu::Buffer> = buffers.iter().map(|b| b.buf.clone()).collect();
        let planned = self.autotune(planned, &raw, &step)?;
        // Pairs of dispatches that run as one (by the first's index in `planned`), each
        // dispatch in at most one pair: a product whose only reader is the fused kernel right
        // after it, kept apart for runs that fetch the product (its view); a max pooling's
        // argmax and the gather of its values; a fused kernel and the reduction of one of its
        // values right after it.
        let mut merged: HashMap<usize, (Dispatch, Option<View>)> = HashMap::new();
        let merge = std::env::var("KILN_MERGE").as_deref() != Ok("off");
        let limit = self.inner.limits.max_storage_buffers_per_shader_stage;
        let mut taken = vec![false; planned.len()];
        for i in (0..kernels.len().saturating_sub(1)).filter(|_| merge) {
            let ((at, 1), (next, 1)) = (spans[i], spans[i + 1]) else {
                continue;
            };
            if next != at + 1 || taken[at] {
                continue;
            }
            if let Some(pair) = merge_pair(&kernels, i, &planned[at], &planned[next], limit)? {
                merged.insert(at, pair);
                taken[at] = true;
                taken[next] = true;
            }
        }
        let mut dispatches = Vec::with_capacity(planned.len());
        let mut alternates = Vec::new();
        let mut j = 0;
        while j < planned.len() {
            match merged.remove(&j) {
                Some((d, product)) => {
                    if let Some(product) = product {
                        alternates.push(Alternate {
                            at: dispatches.len(),
                            product,
                            pair: [planned[j].clone(), planned[j + 1].clone()],
                            prepared: None,
                        });
                    }
                    dispatches.push(self.prepare_dispatch(&d, &step, &raw)?);
                    j += 2;
                }
                None => {
                    dispatches.push(self.prepare_dispatch(&planned[j], &step, &raw)?);
                    j += 1;
                }
            }
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Backend(format!("preparing the program: {e}")));
        }
        self.check("prepare")?;
        let profile = (std::env::var("KILN_PROFILE").as_deref() == Ok("1")).then(|| vec![(0.0, 0); dispatches.len()]);
        Ok(GpuProgram {
            dispatches,
            alternates,
            step,
            rule,
            buffers,
            staging: None,
            profile,
        })
    }

    fn execute(&self, p: &mut GpuProgram, u: &StepUniforms, fetch: &[View]) -> Result<Vec<Vec<u8>>> {
        let q = &self.inner.queue;
        q.write_buffer(&p.step, 0, bytemuck::bytes_of(&Step::new(u, p.rule)));
        // Fetched views are copied in whole words (tensors start 4-byte aligned, and their
        // allocations are rounded up to whole words).
        let words = |v: &View| v.bytes().div_ceil(4) * 4;
        let total: usize = fetch.iter().map(words).sum();
        if total > 0 && p.staging.as_ref().is_none_or(|(_, n)| *n < total) {
            p.staging = Some((
                self.raw(
                    total,
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    "fetch staging",
                ),
                total,
            ));
        }
        // The dispatches in order, each with its index in the profile: a product merged with its
        // epilogue runs as the two dispatches it replaced when the product is fetched.
        let needed = |a: &Alternate| fetch.iter().any(|f| overlap(f, &a.product));
        if p.alternates.iter().any(|a| needed(a) && a.prepared.is_none()) {
            let raw: Vec<wgpu::Buffer> = p.buffers.iter().map(|b| b.buf.clone()).collect();
            let scope = self.inner.device.push_error_scope(wgpu::ErrorFilter::Validation);
            for a in p.alternates.iter_mut().filter(|a| needed(a) && a.prepared.is_none()) {
                a.prepared = Some([
                    self.prepare_dispatch(&a.pair[0], &p.step, &raw)?,
                    self.prepare_dispatch(&a.pair[1], &p.step, &raw)?,
                ]);
            }
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(Error::Backend(format!(
                    "preparing a product and its epilogue apart: {e}"
                )));
            }
        }
        let mut order: Vec<(usize, &Prepared)> = p.dispatches.iter().enumerate().collect();
        for a in p.alternates.iter().rev() {
            if let (true, Some(pair)) = (needed(a), &a.prepared) {
                order.splice(a.at..a.at + 1, pair.iter().map(|d| (a.at, d)));
            }
        }
        if let Some(prof) = p.profile.as_mut() {
            for &(i, d) in &order {
                let e = &mut prof[i];
                let t = std::time::Instant::now();
                let mut enc = self.inner.device.create_command_encoder(&Default::default());
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    pass.set_pipeline(&d.pipeline);
                    pass.set_bind_group(0, &d.bind_group, &[]);
                    pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
                }
                q.submit(std::iter::once(enc.finish()));
                self.inner
                    .device
                    .poll(wgpu::PollType::Wait {
                        submission_index: None,
                        timeout: None,
                    })
                    .map_err(|e| Error::Backend(e.to_string()))?;
                e.0 += t.elapsed().as_secs_f64();
                e.1 += 1;
            }
        }
        let mut enc = self
            .inner
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("kiln step"),
            });
        if p.profile.is_none() {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("kiln step"),
                timestamp_writes: None,
            });
            for (_, d) in &order {
                pass.set_pipeline(&d.pipeline);
                pass.set_bind_group(0, &d.bind_group, &[]);
                pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
            }
        }
        let mut at = 0;
        if let Some((staging, _)) = &p.staging {
            for v in fetch.iter().filter(|v| v.len > 0) {
                enc.copy_buffer_to_buffer(
                    &p.buffers[v.buf].buf,
                    v.offset as u64,
                    staging,
                    at as u64,
                    words(v) as u64,
                );
                at += words(v);
            }
        }
        q.submit(std::iter::once(enc.finish()));
        let data = match &p.staging {
            Some((staging, _)) if total > 0 => self.map_read(staging, total)?,
            _ => Vec::new(),
        };
        self.check("execute")?;
        let mut out = Vec::with_capacity(fetch.len());
        let mut at = 0;
        for v in fetch {
            out.push(data[at..at + v.bytes()].to_vec());
            at += words(v);
        }
        Ok(out)
    }
}

/// A shader module of Kiln's own WGSL, with wgpu's bounds checks and integer-division guards
/// kept but without its loop bounding: wgpu would otherwise add a counter and an exit test to
/// every loop (in case a loop never ends), which keeps drivers from unrolling the short
/// constant-trip loops of the register-blocked kernels (their accumulators then live in
/// memory instead of registers).
fn shader_module(d: &wgpu::Device, label: &str, wgsl: String) -> wgpu::ShaderModule {
    let mut checks = wgpu::ShaderRuntimeChecks::checked();
    checks.force_loop_bounding = false;
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(wgsl.into()),
    };
    // SAFETY: the one requirement of turning loop bounding off is that no loop runs forever.
    // Every loop in Kiln's shaders (shaders/*.wgsl and the generated fused kernels) counts
    // an index up to a bound fixed before the loop starts (a parameter, an override constant
    // or a literal) by a positive step (the variant table's tile steps are checked nonzero by
    // a test), halves a positive stride down to zero, or bisects an interval that shrinks on
    // every pass (the optimiser's segment search).
    unsafe { d.create_shader_module_trusted(desc, checks) }
}
