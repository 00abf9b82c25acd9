//! Choosing where to run: a real GPU when there is one, else the CPU reference backend.
//!
//! `Device::best()` takes a discrete GPU, then an integrated one. With only a software adapter
//! (lavapipe, WARP) it picks the CPU backend, which is faster there, and says so. Environment:
//! `KILN_DEVICE=gpu|cpu` forces a choice, `KILN_ADAPTER=<name substring>` picks an adapter,
//! `KILN_REQUIRE_GPU=1` turns "no GPU adapter" into an error.

use crate::backend::{Backend, Cpu, DeviceInfo, Gpu};
use crate::error::{Error, Result};

/// A backend chosen at run time.
#[derive(Clone)]
pub enum Device {
    /// The CPU reference backend.
    Cpu(Cpu),
    /// A wgpu adapter.
    Gpu(Gpu),
}

impl Device {
    /// The best device for `KILN_DEVICE` (default `auto`); see the module documentation.
    pub fn best() -> Result<Device> {
        let choice = std::env::var("KILN_DEVICE").unwrap_or_else(|_| "auto".into());
        Self::choose(&choice)
    }

    /// `auto`, `cpu` or `gpu`, honouring `KILN_ADAPTER` and `KILN_REQUIRE_GPU`.
    pub fn choose(choice: &str) -> Result<Device> {
        let adapter = std::env::var("KILN_ADAPTER").ok();
        let require = std::env::var("KILN_REQUIRE_GPU").as_deref() == Ok("1");
        match choice {
            "cpu" => Ok(Device::Cpu(Cpu)),
            "gpu" => Ok(Device::Gpu(Gpu::new(adapter.as_deref())?)),
            "auto" => match Gpu::new(adapter.as_deref()) {
                Ok(g) if !g.is_software() || adapter.is_some() => Ok(Device::Gpu(g)),
                Ok(g) => {
                    eprintln!("kiln: only a software adapter ({}) is available; using the CPU backend, which is faster there (KILN_DEVICE=gpu to override)", g.info().adapter);
                    Ok(Device::Cpu(Cpu))
                }
                Err(e) if require => Err(e),
                // An adapter was asked for by name: not finding it is the user's error to see,
                // not a reason to fall back quietly.
                Err(e) if adapter.is_some() => Err(e),
                Err(_) => {
                    eprintln!("kiln: no GPU adapter; using the CPU backend");
                    Ok(Device::Cpu(Cpu))
                }
            },
            other => Err(Error::Invalid {
                op: "device",
                reason: format!("unknown device `{other}` (auto, cpu or gpu)"),
            }),
        }
    }

    /// What the device says about itself.
    pub fn info(&self) -> DeviceInfo {
        match self {
            Device::Cpu(c) => c.info(),
            Device::Gpu(g) => g.info(),
        }
    }
}
