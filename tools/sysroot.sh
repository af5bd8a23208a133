#!/bin/sh
# Port dependencies: the cross toolchain and qemu-user-static on the build machine, and a
# sysroot of the target's Debian -dev and library packages, unpacked (never installed).
#
#   tools/sysroot.sh <triplet> <debian-arch> <suite> <sysroot-dir> [own-libc]
#
# Installing target-architecture packages through multiarch pulls cpp:<arch>/gcc:<arch>, which
# conflict with the host toolchain (it broke the host gcc once), so this script only downloads:
# a private apt state (lists, .deb cache) next to the sysroot, the Depends closure of the
# packages below, `dpkg -x` of each into the sysroot. The system's apt sources, architectures
# and dpkg database are left alone. `own-libc` = 1 also unpacks the target's libc (for a suite
# newer than the cross toolchain's, e.g. riscv64 from trixie): the port then builds with
# --sysroot and runs under qemu with the sysroot as QEMU_LD_PREFIX.
# Re-running is cheap: a stamp records what was unpacked. Env: SYSROOT_EXTRA_DEBS adds packages.
set -e
triplet=$1 arch=$2 suite=$3 dest=$4 own_libc=${5:-0}
if [ -z "$triplet" ] || [ -z "$arch" ] || [ -z "$suite" ] || [ -z "$dest" ]; then
    echo "usage: $0 <triplet> <debian-arch> <suite> <sysroot-dir> [own-libc]" >&2
    exit 2
fi

pkgs="libopenblas-dev libcjson-dev zlib1g-dev nettle-dev ocl-icd-opencl-dev opencl-headers
      libclblast-dev libhwloc-dev libudev-dev libmpich-dev libcmocka-dev $SYSROOT_EXTRA_DEBS"
# Never followed: the C toolchain (the cross compiler brings its own), tools that only run on
# the target (mpiexec, lstopo), and the base system packages the -dev packages name.
stop="gcc-* g++-* cpp cpp-* gfortran gfortran-* binutils* gcc g++ libgcc-*-dev libstdc++-*-dev
      libgfortran-*-dev mpich hwloc hwloc-nox perl perl-* libperl* debconf debconf-2.0 cdebconf
      dpkg tar adduser passwd lsb-base sysvinit-utils install-info libpam* readline-common
      debianutils init-system-helpers usrmerge base-files libc-bin libc-dev-bin libc-l10n
      fortran-compiler gfortran-mod-* libslurm* automake* autoconf autotools-dev m4"
if [ "$own_libc" != 1 ]; then
    stop="$stop libc6 libc6-dev libc-dev libgcc-s1 libstdc++6 libcrypt1 libcrypt-dev linux-libc-dev
          libnsl-dev libnsl2 libtirpc-dev libtirpc3 libtirpc-common gcc-12-base rpcsvc-proto"
fi

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# --- 1. build-machine tools (like `make deps`: only what is missing) ---
host_pkgs="gcc-$triplet qemu-user-static dpkg-dev pkg-config"
missing=""
for p in $host_pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "port-deps: installing$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -o DPkg::Lock::Timeout=300 $missing
fi

# --- 2. sysroot ---
want="$triplet $arch $suite own-libc=$own_libc $(echo $pkgs) script=$(cksum < "$0" | cut -d" " -f1)"
if [ -f "$dest/.tsr-sysroot" ] && [ "$(cat "$dest/.tsr-sysroot")" = "$want" ]; then
    echo "port-deps: $dest up to date"
    exit 0
fi
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
apt_dir="$dest.apt"
rm -rf "$dest" "$apt_dir"
mkdir -p "$dest" "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/etc"
: > "$apt_dir/status"

# The Debian mirror the build machine already uses (deb822 or one-line sources).
uri=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null |
      grep -v security | head -n 1)
[ -n "$uri" ] || uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++)
                        if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list 2>/dev/null)
if [ -z "$uri" ]; then
    echo "port-deps: no Debian mirror found in /etc/apt/sources.list*" >&2
    exit 1
fi
echo "deb [arch=$arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite main" \
    > "$apt_dir/etc/sources.list"
apt_opts="-o Dir::Etc::SourceList=$apt_dir/etc/sources.list -o Dir::Etc::SourceParts=/dev/null
    -o Dir::State::Lists=$apt_dir/lists -o Dir::State::status=$apt_dir/status
    -o Dir::Cache=$apt_dir -o Dir::Cache::archives=$apt_dir/archives
    -o APT::Architecture=$arch -o APT::Architectures::=$arch -o Debug::NoLocking=1
    -o APT::Sandbox::User=root -o Acquire::Languages=none"
echo "port-deps: $suite/$arch package lists"
apt-get $apt_opts -qq update

# Depends + Pre-Depends closure, first alternative of each, stopping at the stop list.
is_stopped() {
    for s in $stop; do
        case "$1" in $s) return 0 ;; esac
    done
    return 1
}
todo=$(echo $pkgs)
seen=" "
: > "$apt_dir/closure"
while [ -n "$todo" ]; do
    fresh=""
    for p in $todo; do
        case "$seen" in *" $p "*) continue ;; esac
        seen="$seen$p "
        fresh="$fresh $p"
    done
    [ -n "$fresh" ] || break
    # One apt-cache call per level; a name with no record of its own is virtual and resolves
    # to its first provider.
    apt-cache $apt_opts show --no-all-versions $fresh > "$apt_dir/show" 2>/dev/null || true
    real=$(awk '/^Package:/ { print $2 }' "$apt_dir/show")
    next=""
    for p in $fresh; do
        case " $(echo $real) " in *" $p "*) continue ;; esac
        prov=$(apt-cache $apt_opts showpkg "$p" 2>/dev/null |
               awk '/^Reverse Provides:/ { getline; print $1; exit }')
        if [ -z "$prov" ]; then
            echo "port-deps: no package $p for $arch in $suite" >&2
            exit 1
        fi
        is_stopped "$prov" || next="$next $prov"
    done
    echo "$real" >> "$apt_dir/closure"
    deps=$(awk -F': ' '/^(Pre-)?Depends:/ { print $2 }' "$apt_dir/show" | tr ',' '\n' |
           sed -e 's/|.*//' -e 's/(.*)//' -e 's/:any//' -e 's/ //g' | sort -u)
    for d in $deps; do
        is_stopped "$d" || next="$next $d"
    done
    todo=$next
done
list=$(sort -u "$apt_dir/closure")
echo "port-deps: downloading $(echo $list | wc -w) packages into $apt_dir/archives"
(cd "$apt_dir/archives" && apt-get $apt_opts -qq download $list)
for deb in "$apt_dir"/archives/*.deb; do
    dpkg -x "$deb" "$dest"
done

# Merged-/usr suites (trixie) ship the /lib -> usr/lib links in base-files, which is not unpacked.
for d in lib lib64 bin sbin; do
    [ -e "$dest/$d" ] || [ ! -d "$dest/usr/$d" ] || ln -s "usr/$d" "$dest/$d"
done
# Absolute symlinks point at the build machine: make them relative inside the sysroot.
find "$dest" -type l | while read -r link; do
    target=$(readlink "$link")
    case "$target" in
        /*) ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$dest$target")" "$link" ;;
    esac
done
# The -dev packages reach some libraries through update-alternatives links (made by maintainer
# scripts, which dpkg -x does not run): point them at the first candidate.
libdir="$dest/usr/lib/$triplet"
for l in libopenblas.so libopenblas.so.0 libblas.so libblas.so.3 libcblas.so libcblas.so.3 \
         liblapack.so liblapack.so.3; do
    [ -e "$libdir/$l" ] && continue
    cand=$(ls "$libdir"/openblas-pthread/$l 2>/dev/null | head -n 1)
    [ -n "$cand" ] && ln -sfn "openblas-pthread/$l" "$libdir/$l"
done
if [ ! -e "$libdir/pkgconfig/openblas.pc" ] && [ -e "$libdir/openblas-pthread/pkgconfig/openblas.pc" ]; then
    mkdir -p "$libdir/pkgconfig"
    ln -sfn ../openblas-pthread/pkgconfig/openblas.pc "$libdir/pkgconfig/openblas.pc"
fi
for l in libmpi.so libmpi.so.12; do
    [ -e "$libdir/$l" ] && continue
    cand=$(ls "$libdir"/libmpich.so* 2>/dev/null | head -n 1)
    [ -n "$cand" ] && ln -sfn "$(basename "$cand")" "$libdir/$l"
done
echo "$want" > "$dest/.tsr-sysroot"
echo "port-deps: sysroot $dest ready ($(du -sh "$dest" | cut -f1))"
