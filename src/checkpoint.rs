//! Checkpoints in the safetensors format: a ParamStore's parameters and optimiser state, its
//! update counter (the learning-rate schedule's position) and loss-scale state, and where the
//! run was (the epoch), with metadata naming the model and the Kiln version.
//!
//! Tensors are stored under the parameters' own names (so other tools, PyTorch's
//! `safetensors.torch.load_file` among them, read the weights directly), and each optimiser
//! state slot under `optimizer.state{k}.{name}`. Saving is atomic: the file is written under a
//! temporary name in the same directory, flushed to disk and renamed over the old one, so a
//! process killed at any moment leaves the old checkpoint or the new one, never a torn file.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::exec::{LossScaleState, ParamStore};
use crate::tensor::Tensor;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// What a checkpoint records beside the tensors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointInfo {
    /// The model's name (e.g. `lenet`), checked by whoever loads it.
    pub model: String,
    /// Epochs completed when it was saved.
    pub epoch: u64,
    /// Anything else the caller wants kept (configuration, metrics), as text.
    pub extra: BTreeMap<String, String>,
}

const FORMAT: &str = "kiln-checkpoint-1";

fn io(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Io(format!("{}: {what}: {e}", path.display()))
}

/// Write `store` and `info` to `path` atomically.
pub fn save<B: Backend>(path: &Path, store: &ParamStore<B>, info: &CheckpointInfo) -> Result<()> {
    let mut blobs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for e in store.entries() {
        let t = store.get(&e.name)?;
        blobs.push((
            e.name.clone(),
            e.shape.0.clone(),
            bytemuck::cast_slice(&t.data).to_vec(),
        ));
    }
    for slot in 0..store.state_slots() {
        for e in store.entries() {
            let t = store.state_of(slot, &e.name)?;
            blobs.push((
                format!("optimizer.state{slot}.{}", e.name),
                e.shape.0.clone(),
                bytemuck::cast_slice(&t.data).to_vec(),
            ));
        }
    }
    let mut meta: HashMap<String, String> = info
        .extra
        .iter()
        .map(|(k, v)| (format!("extra.{k}"), v.clone()))
        .collect();
    meta.insert("format".into(), FORMAT.into());
    meta.insert("kiln_version".into(), env!("CARGO_PKG_VERSION").into());
    meta.insert("model".into(), info.model.clone());
    meta.insert("epoch".into(), info.epoch.to_string());
    meta.insert("updates".into(), store.updates().to_string());
    meta.insert("state_slots".into(), store.state_slots().to_string());
    meta.insert("dtypes".into(), "f32".into());
    if let Some(s) = store.loss_scale_state() {
        meta.insert("loss_scale".into(), format!("{:?}", s.scale.to_bits()));
        meta.insert("loss_scale_clean".into(), s.clean.to_string());
        meta.insert("loss_scale_skipped".into(), s.skipped.to_string());
    }
    let views = blobs
        .iter()
        .map(|(n, s, d)| {
            TensorView::new(Dtype::F32, s.clone(), d)
                .map(|v| (n.clone(), v))
                .map_err(|e| io(path, "encoding", e))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| io(path, "encoding", e))?;
    write_atomic(path, &bytes)
}

/// Replace `path` with `bytes` so that a crash leaves either the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io(path, "saving", "not a file name"))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself must reach the disk too.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(path, "saving", e));
    }
    Ok(())
}

/// Every tensor of a safetensors file as f32 (f16 widened; other types are an error), with its
/// metadata: for inspecting checkpoints, and for importing weights saved by other tools.
pub fn read(path: &Path) -> Result<(BTreeMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| io(path, "reading", e))?;
    parse(&bytes, path)
}

/// [`read`] from bytes already in memory; `path` names them in messages.
pub fn parse(bytes: &[u8], path: &Path) -> Result<(BTreeMap<String, Tensor>, HashMap<String, String>)> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| io(path, "not a safetensors file", e))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| io(path, "not a safetensors file", e))?;
    let mut out = BTreeMap::new();
    for (name, v) in st.tensors() {
        let data: Vec<f32> = match v.dtype() {
            Dtype::F32 => bytemuck::pod_collect_to_vec(v.data()),
            Dtype::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(v.data())
                .iter()
                .map(|h| h.to_f32())
                .collect(),
            other => {
                return Err(io(
                    path,
                    "reading",
                    format!("tensor `{name}` is {other:?}; Kiln reads f32 and f16"),
                ))
            }
        };
        out.insert(name, Tensor::new(v.shape().to_vec(), data)?);
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

/// Load a checkpoint written by [`save`] into `store`: parameters, optimiser state, the update
/// counter and loss-scale state. With `model`, the checkpoint must be of that model. Every
/// difference between the file and the store (a parameter missing or unexpected, a shape) is
/// reported at once, and nothing is written unless the whole file fits.
pub fn load<B: Backend>(path: &Path, store: &mut ParamStore<B>, model: Option<&str>) -> Result<CheckpointInfo> {
    let (tensors, meta) = read(path)?;
    let get = |k: &str| meta.get(k).cloned();
    if get("format").as_deref() != Some(FORMAT) {
        return Err(io(
            path,
            "loading",
            "not a Kiln checkpoint (no `format` metadata); use checkpoint::read for other files",
        ));
    }
    if let Some(m) = model {
        let saved = get("model").unwrap_or_default();
        if saved != m {
            return Err(io(
                path,
                "loading",
                format!("the checkpoint is of model `{saved}`, not `{m}`"),
            ));
        }
    }
    let num = |k: &str| -> Result<u64> {
        get(k)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io(path, "loading", format!("metadata `{k}` is missing or not a number")))
    };
    let slots = num("state_slots")? as usize;
    let mut problems = Vec::new();
    let mut expected = std::collections::BTreeSet::new();
    for e in store.entries() {
        let names = std::iter::once(e.name.clone()).chain((0..slots).map(|k| format!("optimizer.state{k}.{}", e.name)));
        for n in names {
            match tensors.get(&n) {
                None => problems.push(format!("`{n}` is missing")),
                Some(t) if t.shape != e.shape => problems.push(format!(
                    "`{n}` has shape {:?} in the file, {:?} in the model",
                    t.shape, e.shape
                )),
                Some(_) => {}
            }
            expected.insert(n);
        }
    }
    for n in tensors.keys().filter(|n| !expected.contains(*n)) {
        problems.push(format!("`{n}` is not a parameter of this model"));
    }
    if !problems.is_empty() {
        return Err(io(path, "does not fit the model", problems.join("; ")));
    }
    for e in store.entries().to_vec() {
        store.set(&e.name, &tensors[&e.name].data)?;
    }
    for k in 0..slots {
        let mut flat = vec![0f32; store.len()];
        for e in store.entries() {
            let t = &tensors[&format!("optimizer.state{k}.{}", e.name)];
            flat[e.offset..e.offset + t.data.len()].copy_from_slice(&t.data);
        }
        store.write_state(k, &flat)?;
    }
    store.set_updates(num("updates")?);
    if let Some(bits) = get("loss_scale") {
        let scale = bits
            .parse::<u32>()
            .map(f32::from_bits)
            .map_err(|_| io(path, "loading", "metadata `loss_scale` is not a number"))?;
        store.set_loss_scale_state(LossScaleState {
            scale,
            clean: num("loss_scale_clean")?,
            skipped: num("loss_scale_skipped")?,
        })?;
    }
    Ok(CheckpointInfo {
        model: get("model").unwrap_or_default(),
        epoch: num("epoch")?,
        extra: meta
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("extra.").map(|k| (k.to_string(), v.clone())))
            .collect(),
    })
}

/// One entry of a name map between another framework's weights and Kiln's: the other name,
/// Kiln's name, and whether the matrix is stored transposed there (PyTorch's `nn.Linear`
/// weight is `(out, in)`, Kiln's `(in, out)`).
pub type NameMap<'a> = &'a [(&'a str, &'a str, bool)];

/// Set `store`'s parameters from a safetensors file written by another framework (e.g. PyTorch's
/// `safetensors.torch.save_file(model.state_dict(), path)`), renaming and transposing through
/// `map` (see [`crate::nn::LENET5_TORCH_NAMES`]). Every parameter of the map must be in the file
/// with the right shape, and every parameter of the store must be in the map; other tensors in
/// the file are ignored. All differences are reported at once, and nothing is written unless
/// the whole file fits. Returns the file's metadata.
pub fn import<B: Backend>(path: &Path, store: &ParamStore<B>, map: NameMap<'_>) -> Result<HashMap<String, String>> {
    let (tensors, meta) = read(path)?;
    let mut problems = Vec::new();
    let mut values = Vec::new();
    for e in store.entries() {
        let Some(&(theirs, _, transpose)) = map.iter().find(|m| m.1 == e.name) else {
            problems.push(format!("`{}` has no entry in the name map", e.name));
            continue;
        };
        let Some(t) = tensors.get(theirs) else {
            problems.push(format!("`{theirs}` (for `{}`) is missing", e.name));
            continue;
        };
        let d = t.shape.dims();
        let want: Vec<usize> = if transpose {
            e.shape.dims().iter().rev().copied().collect()
        } else {
            e.shape.0.clone()
        };
        if d != want.as_slice() || (transpose && d.len() != 2) {
            problems.push(format!("`{theirs}` has shape {d:?}, `{}` needs {want:?}", e.name));
            continue;
        }
        let data = if transpose {
            let (r, c) = (d[0], d[1]);
            (0..c * r).map(|i| t.data[(i % r) * c + i / r]).collect()
        } else {
            t.data.clone()
        };
        values.push((e.name.clone(), data));
    }
    if !problems.is_empty() {
        return Err(io(path, "does not fit the model", problems.join("; ")));
    }
    for (name, data) in values {
        store.set(&name, &data)?;
    }
    Ok(meta)
}
