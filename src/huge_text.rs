//! The executable's machine code on 2 MiB pages.
//!
//! A request's path runs through more code than the CPU's TLBs cover in 4 KiB pages, spread over
//! ~11 MB of `.text`. Linux maps an executable's code in 4 KiB pages of the page cache (huge file
//! pages need `CONFIG_READ_ONLY_THP_FOR_FS`, which kernels often lack), so at start the gateway
//! copies the 2 MiB-aligned middle of its code into anonymous memory backed by transparent huge
//! pages and moves that copy over the original with one `mremap`: the same bytes at the same
//! addresses, in a few TLB entries instead of thousands. Measured in the README ("Performance").
//!
//! Costs: the copied range counts in RSS (it was shared page cache), and profilers that map code
//! to the file by `/proc/PID/maps` see an anonymous mapping there. `CHEAPMODEL_HUGE_TEXT=0` in the
//! environment keeps the plain mapping; so does any failed step (THP off, a seccomp filter, another
//! OS), which leaves the original mapping untouched.
//! Imports: none (libc only).

/// The huge page size this module maps (x86-64 and arm64 with 4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

/// The environment variable that turns the move off (`0`).
pub const ENV: &str = "CHEAPMODEL_HUGE_TEXT";

/// What [`remap`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remapped {
    /// This many bytes of code now sit on huge pages.
    Bytes(usize),
    /// The code spans no whole aligned huge page: nothing to gain.
    TooSmall,
    /// `CHEAPMODEL_HUGE_TEXT=0`.
    Disabled,
    /// Transparent huge pages are off for anonymous memory (`never`), so a copy would only cost
    /// memory.
    NoHugePages,
}

/// Moves the code onto huge pages unless `CHEAPMODEL_HUGE_TEXT=0` or the kernel has no
/// transparent huge pages for it. Call it first thing in `main`, before any other thread runs.
pub fn remap_unless_disabled() -> std::io::Result<Remapped> {
    if std::env::var_os(ENV).is_some_and(|v| v == "0") {
        return Ok(Remapped::Disabled);
    }
    if !huge_pages_on() {
        return Ok(Remapped::NoHugePages);
    }
    remap()
}

/// Whether a `madvise(MADV_HUGEPAGE)` region gets 2 MiB pages: THP `always` or `madvise`, and the
/// 2 MiB size not turned off on its own (kernels with per-size THP).
fn huge_pages_on() -> bool {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let selected = |setting: &str, choice: &str| setting.contains(&format!("[{choice}]"));
    let Some(global) = read("/sys/kernel/mm/transparent_hugepage/enabled") else {
        return false;
    };
    let global_on = selected(&global, "always") || selected(&global, "madvise");
    match read("/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/enabled") {
        Some(size) if selected(&size, "inherit") => global_on,
        Some(size) => selected(&size, "always") || selected(&size, "madvise"),
        None => global_on,
    }
}

/// The executable's code segment: the `r-xp` mapping of `/proc/self/exe` in `/proc/self/maps`.
fn code_range(maps: &str, exe: &str) -> Option<(usize, usize)> {
    maps.lines().find_map(|line| {
        // `start-end perms offset dev inode   path`; the path may hold spaces.
        let mut fields = line.split_ascii_whitespace();
        let range = fields.next()?;
        let perms = fields.next()?;
        if perms != "r-xp" || !line.ends_with(exe) || !line[..line.len() - exe.len()].ends_with(' ') {
            return None;
        }
        let (start, end) = range.split_once('-')?;
        Some((usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?))
    })
}

/// The whole huge pages inside `[start, end)`.
fn aligned_inside(start: usize, end: usize) -> Option<(usize, usize)> {
    let first = start.checked_add(HUGE_PAGE - 1)? & !(HUGE_PAGE - 1);
    let last = end & !(HUGE_PAGE - 1);
    (last > first).then_some((first, last))
}

/// Moves the executable's code onto huge pages, whatever the environment says. Before other
/// threads run: one executing the range while it moves would wait on the kernel's lock, which is
/// not what a start-up should depend on.
#[cfg(target_os = "linux")]
pub fn remap() -> std::io::Result<Remapped> {
    use std::io::{Error, ErrorKind};
    let exe = std::fs::read_link("/proc/self/exe")?;
    let exe = exe.to_str().ok_or_else(|| Error::new(ErrorKind::InvalidData, "executable path is not UTF-8"))?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let (start, end) =
        code_range(&maps, exe).ok_or_else(|| Error::new(ErrorKind::NotFound, "no r-xp mapping of the executable"))?;
    let Some((first, last)) = aligned_inside(start, end) else {
        return Ok(Remapped::TooSmall);
    };
    let len = last - first;
    // SAFETY: every call gets ranges this function mapped itself, or `[first, last)`, which lies
    // inside the executable's own code mapping. The copy is byte-identical and made read+exec
    // before it replaces the original in one `mremap`, so every address in the range holds the
    // same instruction before and after. On any failure the original mapping is left as it was.
    unsafe {
        // Room for a 2 MiB-aligned block of `len` bytes.
        let raw = libc::mmap(
            std::ptr::null_mut(),
            len + HUGE_PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if raw == libc::MAP_FAILED {
            return Err(Error::last_os_error());
        }
        let raw_start = raw as usize;
        let copy = (raw_start + HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
        let unmap_slack = || {
            if copy > raw_start {
                libc::munmap(raw, copy - raw_start);
            }
            let tail = copy + len;
            let raw_end = raw_start + len + HUGE_PAGE;
            if raw_end > tail {
                libc::munmap(tail as *mut libc::c_void, raw_end - tail);
            }
        };
        unmap_slack();
        let fail = |e: Error| {
            libc::munmap(copy as *mut libc::c_void, len);
            Err(e)
        };
        if libc::madvise(copy as *mut libc::c_void, len, libc::MADV_HUGEPAGE) != 0 {
            return fail(Error::last_os_error());
        }
        std::ptr::copy_nonoverlapping(first as *const u8, copy as *mut u8, len);
        if libc::mprotect(copy as *mut libc::c_void, len, libc::PROT_READ | libc::PROT_EXEC) != 0 {
            return fail(Error::last_os_error());
        }
        let moved = libc::mremap(
            copy as *mut libc::c_void,
            len,
            len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            first as *mut libc::c_void,
        );
        if moved == libc::MAP_FAILED {
            return fail(Error::last_os_error());
        }
    }
    Ok(Remapped::Bytes(len))
}

#[cfg(not(target_os = "linux"))]
pub fn remap() -> std::io::Result<Remapped> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "huge text pages are Linux-only"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_executables_code_mapping_only() {
        let maps = "\
55d0c0000000-55d0c0074000 r--p 00000000 fd:01 123 /usr/bin/cheapmodel
55d0c0074000-55d0c2400000 r-xp 00074000 fd:01 123 /usr/bin/cheapmodel
55d0c2400000-55d0c2500000 rw-p 00000000 00:00 0
7f0000000000-7f0000200000 r-xp 00000000 fd:01 456 /usr/lib/libc.so.6
";
        assert_eq!(code_range(maps, "/usr/bin/cheapmodel"), Some((0x55d0c0074000, 0x55d0c2400000)));
        assert_eq!(code_range(maps, "/usr/bin/other"), None);
    }

    #[test]
    fn keeps_only_whole_huge_pages() {
        assert_eq!(aligned_inside(0x1000, 0x600000), Some((0x200000, 0x600000)));
        assert_eq!(aligned_inside(0x200000, 0x5ff000), Some((0x200000, 0x400000)));
        assert_eq!(aligned_inside(0x201000, 0x3ff000), None);
    }

    /// The start of the anonymous executable mapping `remap` left in `maps`.
    fn first_huge_page(maps: &str) -> usize {
        let line = maps.lines().find(|l| l.contains(" r-xp 00000000 00:00 0")).expect("an anonymous r-xp mapping");
        usize::from_str_radix(line.split('-').next().expect("range"), 16).expect("hex")
    }

    /// `AnonHugePages` (KiB) of the mapping starting at `start`, from `/proc/self/smaps`.
    fn huge_kb_at(start: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let head = format!("{start:x}-");
        let entry = smaps.split_inclusive('\n').skip_while(|l| !l.starts_with(&head)).skip(1);
        for line in entry.take_while(|l| !l.contains(" r-xp ") && !l.contains(" rw-p ") && !l.contains(" r--p ")) {
            if let Some(kb) = line.strip_prefix("AnonHugePages:") {
                return kb.trim().trim_end_matches(" kB").trim().parse().expect("kB");
            }
        }
        0
    }

    /// The code still runs after the move, and the range is an anonymous mapping now.
    #[cfg(target_os = "linux")]
    #[test]
    fn code_keeps_running_after_the_move() {
        let before = std::fs::read_to_string("/proc/self/maps").expect("maps");
        match remap().expect("remap") {
            Remapped::TooSmall | Remapped::Disabled | Remapped::NoHugePages => {}
            Remapped::Bytes(len) => {
                assert!(len >= HUGE_PAGE);
                let after = std::fs::read_to_string("/proc/self/maps").expect("maps");
                assert_ne!(before, after);
                if huge_pages_on() {
                    assert!(huge_kb_at(first_huge_page(&after)) > 0, "the moved code is not on huge pages");
                }
                // Calls into the moved range (the std and test harness code) still work.
                let v: Vec<u64> = (0..1000).map(|i| i * i).collect();
                assert_eq!(v.iter().sum::<u64>(), 332_833_500);
            }
        }
    }
}
