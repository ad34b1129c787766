"""The repositories onlyone needs, for its own WORKSPACE and for consumers'.

A workspace that depends on onlyone needs only

    local_repository(name = "onlyone", path = "...")   # or http_archive
    load("@onlyone//:deps.bzl", "onlyone_dependencies")
    onlyone_dependencies()

and a dep on "@onlyone//lib:onlyone": it then builds offline, with no flag
or file of its own. onlyone_dependencies() declares, each only if the
workspace has not declared it already (a user's own definition always wins):

  rules_cc, rules_java, remote_coverage_tools
      Local stand-ins (third_party/) for the three repositories Bazel 4.2.3
      would download even for a plain cc_binary.
  platforms
      Debian's bazel-platforms package.
  local_config_cc
      Bazel's auto-configured C++ toolchain with C++17 as its language
      standard instead of the -std=c++0x it defaults to. See below.

Why a toolchain and not copts: Bazel 4.2.3's auto-configured toolchain
compiles every C++ file with -std=c++0x (its BAZEL_CXXOPTS default). copts
on onlyone's targets fix onlyone's own sources, but the consumer's app.cc,
which includes onlyone's headers (std::optional, inline variables, ...), is
compiled with the consumer's flags, and no attribute of a cc_library can
reach the compile line of its dependents. So onlyone_dependencies()
declares @local_config_cc itself, before the cc_configure() that Bazel
appends to every WORKSPACE (Bazel fetches a repository from its first
declaration; `bazel query //external:local_config_cc` shows the last one,
cc_autoconf, all the same): the same auto-configuration, run by Bazel's own
code, with -std=c++17 in place of -std=c++0x. Nothing changes if BAZEL_CXXOPTS is set in the environment
(the user chose a standard), or if the workspace declared local_config_cc
(or called cc_configure()) before onlyone_dependencies(); then that
toolchain must give C++17 itself (BAZEL_CXXOPTS=-std=c++17, or
--cxxopt=-std=c++17 in a .bazelrc).

The system libraries (Debian's Abseil, ...) need no repository: their
wrappers are packages of this repository (//third_party, i.e.
"@onlyone//third_party:absl" from outside).
"""

load("@bazel_tools//tools/cpp:cc_configure.bzl", "MSVC_ENVVARS", "cc_autoconf_impl")

# The language standard onlyone's headers need.
_CXX_STANDARD = "-std=c++17"

# What Bazel's auto-configuration writes when BAZEL_CXXOPTS is not set
# (unix_cc_configure.bzl); checked, so that a Bazel writing something else
# fails here instead of silently compiling with the wrong standard.
_DEFAULT_CXX_FLAGS = 'cxx_flags = ["-std=c++0x"],'

def _cxx17_cc_autoconf_impl(repository_ctx):
    cc_autoconf_impl(repository_ctx)
    if "BAZEL_CXXOPTS" in repository_ctx.os.environ:
        return
    build = repository_ctx.read("BUILD")
    if _DEFAULT_CXX_FLAGS not in build:
        fail("onlyone: the auto-configured C++ toolchain has no '%s' to " % _DEFAULT_CXX_FLAGS +
             "replace with %s; set BAZEL_CXXOPTS=%s instead" % (_CXX_STANDARD, _CXX_STANDARD))
    repository_ctx.file(
        "BUILD",
        build.replace(_DEFAULT_CXX_FLAGS, 'cxx_flags = ["%s"],' % _CXX_STANDARD),
        executable = False,
    )

# Bazel's cc_autoconf (cc_configure.bzl), whose environ list this repeats
# so that the toolchain is reconfigured on the same changes.
_cxx17_cc_autoconf = repository_rule(
    environ = [
        "ABI_LIBC_VERSION",
        "ABI_VERSION",
        "BAZEL_COMPILER",
        "BAZEL_HOST_SYSTEM",
        "BAZEL_CXXOPTS",
        "BAZEL_LINKOPTS",
        "BAZEL_LINKLIBS",
        "BAZEL_LLVM_COV",
        "BAZEL_PYTHON",
        "BAZEL_SH",
        "BAZEL_TARGET_CPU",
        "BAZEL_TARGET_LIBC",
        "BAZEL_TARGET_SYSTEM",
        "BAZEL_USE_CPP_ONLY_TOOLCHAIN",
        "BAZEL_USE_XCODE_TOOLCHAIN",
        "BAZEL_DO_NOT_DETECT_CPP_TOOLCHAIN",
        "BAZEL_USE_LLVM_NATIVE_COVERAGE",
        "BAZEL_LLVM",
        "BAZEL_IGNORE_SYSTEM_HEADERS_VERSIONS",
        "USE_CLANG_CL",
        "CC",
        "CC_CONFIGURE_DEBUG",
        "CC_TOOLCHAIN_NAME",
        "CPLUS_INCLUDE_PATH",
        "DEVELOPER_DIR",
        "GCOV",
        "HOMEBREW_RUBY_PATH",
        "SYSTEMROOT",
        "USER",
    ] + MSVC_ENVVARS,
    implementation = _cxx17_cc_autoconf_impl,
    configure = True,
)

def _onlyone_subdirectory_impl(repository_ctx):
    # The root of the repository this file belongs to (@onlyone for a
    # consumer, the main repository for onlyone's own WORKSPACE).
    directory = repository_ctx.path(Label("//:deps.bzl")).dirname
    for part in repository_ctx.attr.directory.split("/"):
        directory = directory.get_child(part)
    if not directory.exists:
        fail("onlyone: no directory %s" % directory)
    for entry in directory.readdir():
        repository_ctx.symlink(entry, entry.basename)

# A directory of this repository (third_party/rules_cc, ...) as a repository
# of its own. local_repository cannot do it from a macro: its relative path
# would be taken from the consumer's workspace, not from onlyone's.
_onlyone_subdirectory = repository_rule(
    attrs = {"directory": attr.string(mandatory = True)},
    implementation = _onlyone_subdirectory_impl,
    local = True,
)

def onlyone_dependencies():
    """Declares the repositories onlyone needs, except those already declared."""
    for name in ["rules_cc", "rules_java", "remote_coverage_tools"]:
        if not native.existing_rule(name):
            _onlyone_subdirectory(name = name, directory = "third_party/" + name)
    if not native.existing_rule("platforms"):
        native.local_repository(
            name = "platforms",
            path = "/usr/share/bazel/tools/platforms",
        )
    if not native.existing_rule("local_config_cc"):
        _cxx17_cc_autoconf(name = "local_config_cc")
