//! List the GPU adapters wgpu can see, with their backend, type and key limits, and the device
//! `Device::best()` would pick.
//!
//! cargo run --release --example devices

fn main() {
    let all = kiln::backend::wgpu::adapters();
    if all.is_empty() {
        println!("no GPU adapters (on Linux: apt-get install mesa-vulkan-drivers for lavapipe)");
    }
    for a in &all {
        println!(
            "{:<40} {:<8} {:<14} storage binding {:>6} MiB, buffer {:>6} MiB, {:>4} invocations/workgroup, {:>3} KiB workgroup memory",
            a.name,
            a.backend,
            a.device_type,
            a.max_storage_binding >> 20,
            a.max_buffer >> 20,
            a.max_invocations,
            a.max_workgroup_memory >> 10
        );
    }
    match kiln::Device::best() {
        Ok(d) => {
            let i = d.info();
            println!("Device::best(): {} on {}", i.backend, i.adapter);
        }
        Err(e) => println!("Device::best(): {e}"),
    }
}
