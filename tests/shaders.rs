//! Every WGSL kernel family parses and validates with naga, on any machine (no GPU needed), so a
//! shader error is caught where it is written.

use kiln::backend::wgpu::kernels::Family;

#[test]
fn every_shader_family_validates() {
    for family in Family::ALL {
        // Exactly the text the pipelines compile, generated parts included.
        let src = family.source();
        assert!(
            !src.contains("{{"),
            "{family:?}: a template placeholder was left unfilled"
        );
        let module =
            naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{family:?}: {}", e.emit_to_string(&src)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{family:?}: {}", e.emit_to_string(&src)));
        assert!(!module.entry_points.is_empty(), "{family:?} has no entry points");
    }
}
