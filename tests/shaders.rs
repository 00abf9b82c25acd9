//! Every WGSL kernel family parses and validates with naga, on any machine (no GPU needed), so a
//! shader error is caught where it is written.

use kiln::backend::wgpu::kernels::{Family, Storage, Store};

#[test]
fn every_shader_family_validates() {
    // f32 words everywhere; f16 through WGSL's f16; f16 packed in words; and mixes of them.
    let storages = [
        Storage::default(),
        Storage([Store::F16; 4]),
        Storage([Store::F16Packed; 4]),
        Storage([Store::F16, Store::Word, Store::F16, Store::Word]),
        Storage([Store::Word, Store::F16Packed, Store::Word, Store::F16Packed]),
    ];
    for family in Family::ALL {
        for st in storages {
            // Exactly the text the pipelines compile, generated parts included.
            let src = family.source_with(st);
            assert!(
                !src.contains("{{"),
                "{family:?}: a template placeholder was left unfilled"
            );
            let module =
                naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{family:?}: {}", e.emit_to_string(&src)));
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::SHADER_FLOAT16 | naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32,
            )
            .validate(&module)
            .unwrap_or_else(|e| panic!("{family:?} {st:?}: {}", e.emit_to_string(&src)));
            assert!(!module.entry_points.is_empty(), "{family:?} has no entry points");
        }
    }
}

/// Each `#[repr(C)]` parameter struct and the WGSL struct of the same name agree field for
/// field: names, offsets, sizes and total size (and, for a header with a table, the table's
/// place and element type). A field added, dropped, reordered or retyped on one side only fails
/// here, on any machine, instead of reading the wrong words on the device.
#[test]
fn parameter_structs_match_their_wgsl_mirrors() {
    use kiln::backend::wgpu::kernels::mirrors;
    use std::collections::HashSet;
    let all = mirrors();
    let names: HashSet<&str> = all.iter().map(|m| m.name).collect();
    // Every struct bound as a parameter block (binding 0) or the per-step values (binding 1)
    // has a mirror.
    for family in Family::ALL {
        let src = family.source();
        let module = naga::front::wgsl::parse_str(&src).unwrap();
        for (_, var) in module.global_variables.iter() {
            if matches!(&var.binding, Some(b) if b.binding <= 1) {
                let ty = module.types[var.ty].name.clone().unwrap_or_default();
                assert!(
                    names.contains(ty.as_str()),
                    "{family:?}: `{}: {ty}` has no Rust mirror",
                    var.name.clone().unwrap_or_default()
                );
            }
        }
    }
    for m in all {
        let src = m.family.source();
        let module = naga::front::wgsl::parse_str(&src).unwrap();
        let ctx = module.to_ctx();
        let (ty, members) = module
            .types
            .iter()
            .find_map(|(h, t)| match (&t.name, &t.inner) {
                (Some(n), naga::TypeInner::Struct { members, .. }) if n == m.name => Some((h, members)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{:?} declares no WGSL struct `{}`", m.family, m.name));
        let listed: usize = m.fields.iter().map(|f| f.2).sum();
        assert_eq!(
            listed, m.size,
            "{}: the listed fields do not cover the Rust struct",
            m.name
        );
        let header = &members[..members.len() - m.table.is_some() as usize];
        let wgsl: Vec<(String, usize, usize, String)> = header
            .iter()
            .map(|mb| {
                let size = module.types[mb.ty].inner.size(ctx) as usize;
                let ty = spelling(&module, mb.ty);
                (mb.name.clone().unwrap_or_default(), mb.offset as usize, size, ty)
            })
            .collect();
        let rust: Vec<(String, usize, usize, String)> = m
            .fields
            .iter()
            .map(|&(n, o, s, t)| (n.to_string(), o, s, t.to_string()))
            .collect();
        assert_eq!(wgsl, rust, "{}: WGSL (left) vs Rust (right)", m.name);
        match m.table {
            None => assert_eq!(
                module.types[ty].inner.size(ctx) as usize,
                m.size,
                "{}: WGSL size vs Rust size",
                m.name
            ),
            Some((name, elem)) => {
                let last = members.last().unwrap();
                assert_eq!(last.name.as_deref(), Some(name), "{}: the table member", m.name);
                assert_eq!(
                    last.offset as usize, m.size,
                    "{}: the table starts after the header",
                    m.name
                );
                match &module.types[last.ty].inner {
                    naga::TypeInner::Array {
                        base,
                        size: naga::ArraySize::Dynamic,
                        ..
                    } => assert_eq!(
                        module.types[*base].name.as_deref(),
                        Some(elem),
                        "{}: table element",
                        m.name
                    ),
                    other => panic!("{}: `{name}` is not a runtime-sized array: {other:?}", m.name),
                }
            }
        }
    }
}

/// The WGSL spelling of the member types parameter structs use.
fn spelling(module: &naga::Module, ty: naga::Handle<naga::Type>) -> String {
    match &module.types[ty].inner {
        naga::TypeInner::Scalar(s) => match (s.kind, s.width) {
            (naga::ScalarKind::Uint, 4) => "u32".into(),
            (naga::ScalarKind::Sint, 4) => "i32".into(),
            (naga::ScalarKind::Float, 4) => "f32".into(),
            other => format!("{other:?}"),
        },
        naga::TypeInner::Array {
            base,
            size: naga::ArraySize::Constant(n),
            ..
        } => format!("array<{}, {n}>", spelling(module, *base)),
        other => format!("{other:?}"),
    }
}
