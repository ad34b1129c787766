"""static_archive: one .a holding the objects of cc_libraries and their deps.

Bazel 4.2.3 has no rule for an installable static library: each cc_library
makes an archive of its own. This collects the position-independent objects
of every library of the deps' repository (the system-library wrappers carry
only linkopts and no objects) into one deterministic archive, for
tools/install. The linkopts (Abseil, ...) are not in the archive: the .pc and
CMake files name them (tools/packaging/system_deps).
"""

load("@bazel_tools//tools/cpp:toolchain_utils.bzl", "find_cpp_toolchain")

def _static_archive_impl(ctx):
    objects = []
    by_name = {}
    for dep in ctx.attr.deps:
        for linker_input in dep[CcInfo].linking_context.linker_inputs.to_list():
            if linker_input.owner.workspace_name != ctx.label.workspace_name:
                continue
            for library in linker_input.libraries:
                for obj in library.pic_objects or library.objects:
                    # ar keeps only a member's base name: two objects named
                    # alike would be ambiguous for whoever extracts them.
                    if obj.basename in by_name:
                        fail("%s and %s share a member name" % (by_name[obj.basename].path, obj.path))
                    by_name[obj.basename] = obj
                    objects.append(obj)
    if not objects:
        fail("no objects in %s" % ctx.attr.deps)
    cc_toolchain = find_cpp_toolchain(ctx)
    output = ctx.actions.declare_file(ctx.attr.archive_name)
    args = ctx.actions.args()
    args.add("rcsD")  # D: zero timestamps and ids, so the archive is reproducible
    args.add(output)
    args.add_all(objects)
    ctx.actions.run(
        executable = cc_toolchain.ar_executable,
        arguments = [args],
        inputs = depset(objects, transitive = [cc_toolchain.all_files]),
        outputs = [output],
        mnemonic = "StaticArchive",
        progress_message = "Archiving %s" % output.short_path,
    )
    return [DefaultInfo(files = depset([output]))]

static_archive = rule(
    implementation = _static_archive_impl,
    attrs = {
        "deps": attr.label_list(providers = [CcInfo], mandatory = True),
        "archive_name": attr.string(mandatory = True),
        "_cc_toolchain": attr.label(default = "@bazel_tools//tools/cpp:current_cc_toolchain"),
    },
    toolchains = ["@bazel_tools//tools/cpp:toolchain_type"],
    incompatible_use_toolchain_transition = True,
)
