//! Shared bench helpers: the backends to measure and a compiled single-output program.
#![allow(dead_code)]

use kiln::{Backend, Cpu, Feed, Graph, NodeId, ParamStore, Program};

/// The backends to measure: the CPU reference, and the GPU when an adapter exists
/// (`KILN_ADAPTER` picks one).
pub fn each_backend(mut f: impl FnMut(&str, &dyn Fn(&mut dyn FnMut(&dyn BenchBackend)))) {
    f("cpu", &|g: &mut dyn FnMut(&dyn BenchBackend)| g(&Cpu));
    match kiln::Gpu::new(std::env::var("KILN_ADAPTER").ok().as_deref()) {
        Ok(gpu) => {
            let name = if gpu.is_software() { "gpu-software" } else { "gpu" };
            eprintln!("GPU: {}", gpu.info().adapter);
            f(name, &|g: &mut dyn FnMut(&dyn BenchBackend)| g(&gpu));
        }
        Err(e) => eprintln!("no GPU benches: {e}"),
    }
}

/// A compiled program over one backend, run with fixed feeds; object-safe so that one bench
/// body serves every backend.
pub trait BenchBackend {
    /// Compile `g` (fetching `fetch`) and return a closure that runs one step.
    fn runner(
        &self,
        g: &Graph,
        fetch: &[NodeId],
        train: Option<(&kiln::Gradients, &kiln::Optimizer)>,
        feeds: Vec<(String, Vec<f32>)>,
        labels: Vec<(String, Vec<u32>)>,
    ) -> Box<dyn FnMut()>;
}

impl<B: Backend + 'static> BenchBackend for B {
    fn runner(
        &self,
        g: &Graph,
        fetch: &[NodeId],
        train: Option<(&kiln::Gradients, &kiln::Optimizer)>,
        feeds: Vec<(String, Vec<f32>)>,
        labels: Vec<(String, Vec<u32>)>,
    ) -> Box<dyn FnMut()> {
        let mut store = ParamStore::new(self, g, 0).expect("store");
        let t = train.map(|(grads, optimizer)| kiln::Training::new(grads, optimizer));
        let mut prog = Program::compile(g, &mut store, fetch, t).expect("compile");
        Box::new(move || {
            let mut f: Vec<(&str, Feed<'_>)> = feeds.iter().map(|(n, v)| (n.as_str(), Feed::F32(v))).collect();
            f.extend(labels.iter().map(|(n, v)| (n.as_str(), Feed::Labels(v))));
            let out = prog.run(&f).expect("run");
            std::hint::black_box(out);
            let _ = &store;
        })
    }
}
