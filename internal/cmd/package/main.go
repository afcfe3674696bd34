// Command package builds the agent's .deb and .rpm packages for image
// builders:
//
//	go run ./internal/cmd/package [-version 1.2.3] [-arch amd64,arm64] [-out dist]
//
// writes azure-proxy-agent_<version>_<arch>.deb and
// azure-proxy-agent-<version>-1.<arch>.rpm. The layout is upstream's:
// /usr/sbin/azure-proxy-agent, the unit in /usr/lib/systemd/system,
// /etc/azure/proxy-agent.json as a configuration file the package manager
// never overwrites once edited, the log, key and rules folders with their
// modes; msp-validate ships beside the agent. The build is reproducible:
// the same commit gives the same bytes (SOURCE_DATE_EPOCH, the commit time
// by default, dates every file; binaries are built with -trimpath,
// stripped, without VCS stamps). It runs from the module root.
//
// This is a build tool: nothing in the agent imports it, and nfpm, the
// packaging library it uses, is linked only here.
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager

	"github.com/metadatasec/gpa/agent"
)

// defaultVersion matches the azure-proxy-agent program's own default.
const defaultVersion = "0.1.0-dev"

// pinFolder is where the packaged configuration pins the programs, so that
// an upgrade's restart takes them over instead of detaching them.
const pinFolder = "/sys/fs/bpf/azure-proxy-agent"

// options are one run of the command.
type options struct {
	Version string
	Arches  []string
	Formats []string
	Out     string
	// Root is the module root (the unit, man pages and scripts are read
	// from it); MTime dates every file and the package itself.
	Root  string
	MTime time.Time
}

func main() {
	code, err := run(context.Background(), os.Args[1:], os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "package:", err)
	}
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout io.Writer) (int, error) {
	fs := flag.NewFlagSet("package", flag.ContinueOnError)
	version := fs.String("version", defaultVersion, "package and agent version (semver; -dev becomes ~dev)")
	arches := fs.String("arch", "amd64,arm64", "comma-separated GOARCH values")
	formats := fs.String("format", "deb,rpm", "comma-separated package formats")
	out := fs.String("out", "dist", "output folder")
	if err := fs.Parse(args); err != nil {
		return 2, nil
	}
	if fs.NArg() > 0 {
		return 2, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return 1, err
	}
	mtime, err := sourceDate(ctx, root)
	if err != nil {
		return 1, err
	}
	paths, err := build(ctx, &options{
		Version: *version, Arches: strings.Split(*arches, ","), Formats: strings.Split(*formats, ","),
		Out: *out, Root: root, MTime: mtime,
	})
	for _, p := range paths {
		fmt.Fprintln(stdout, p)
	}
	if err != nil {
		return 1, err
	}
	return 0, nil
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("find the module root: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// sourceDate is SOURCE_DATE_EPOCH, else the time of the last commit.
func sourceDate(ctx context.Context, root string) (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		out, err := exec.CommandContext(ctx, "git", "-C", root, "log", "-1", "--format=%ct").Output()
		if err != nil {
			return time.Time{}, fmt.Errorf("no SOURCE_DATE_EPOCH and no commit time: %w", err)
		}
		s = strings.TrimSpace(string(out))
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// build writes every package asked for and returns their paths.
func build(ctx context.Context, o *options) ([]string, error) {
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	stage, err := os.MkdirTemp("", "gpa-package-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	common, err := stageCommon(o, stage)
	if err != nil {
		return nil, err
	}
	var paths []string
	for _, arch := range o.Arches {
		bin := filepath.Join(stage, arch)
		for _, prog := range []string{"azure-proxy-agent", "msp-validate"} {
			if err := goBuild(ctx, o, arch, prog, filepath.Join(bin, prog)); err != nil {
				return paths, err
			}
		}
		for _, format := range o.Formats {
			p, err := writePackage(o, format, arch, append(common[:len(common):len(common)], binaries(o, bin)...), stage)
			if err != nil {
				return paths, err
			}
			paths = append(paths, p)
		}
	}
	return paths, nil
}

// goBuild builds one program of examples/ for linux/arch, reproducibly.
func goBuild(ctx context.Context, o *options, arch, prog, dst string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -buildid= -X main.version="+o.Version, "-o", dst, "./examples/"+prog)
	cmd.Dir = o.Root
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arch, "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s for %s: %w\n%s", prog, arch, err, out)
	}
	return nil
}

func binaries(o *options, dir string) files.Contents {
	return files.Contents{
		file(o, filepath.Join(dir, "azure-proxy-agent"), agent.InstalledBinary, 0o755, ""),
		file(o, filepath.Join(dir, "msp-validate"), "/usr/sbin/msp-validate", 0o755, ""),
	}
}

func file(o *options, src, dst string, mode os.FileMode, typ string) *files.Content {
	return &files.Content{Source: src, Destination: dst, Type: typ,
		FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: o.MTime}}
}

func dir(o *options, dst string, mode os.FileMode) *files.Content {
	return &files.Content{Destination: dst, Type: files.TypeDir,
		FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: o.MTime}}
}

// stageCommon writes what every architecture shares and lists it.
func stageCommon(o *options, stage string) (files.Contents, error) {
	cfg, err := packagedConfig()
	if err != nil {
		return nil, err
	}
	write := func(name string, data []byte) (string, error) {
		p := filepath.Join(stage, name)
		return p, os.WriteFile(p, data, 0o644)
	}
	cfgPath, err := write("proxy-agent.json", cfg)
	if err != nil {
		return nil, err
	}
	contents := files.Contents{
		file(o, cfgPath, agent.DefaultConfigPath, 0o644, files.TypeConfigNoReplace),
		file(o, filepath.Join(o.Root, "examples/azure-proxy-agent/azure-proxy-agent.service"), agent.InstalledUnit, 0o644, ""),
		// The agent's folders, with the modes the agent and the unit
		// expect (LogsDirectoryMode, StateDirectoryMode, the key store's
		// 0700).
		dir(o, "/var/log/azure-proxy-agent", 0o755),
		dir(o, "/var/lib/azure-proxy-agent", 0o700),
		dir(o, "/var/lib/azure-proxy-agent/keys", 0o700),
		dir(o, "/var/lib/azure-proxy-agent/rules", 0o700),
	}
	for _, page := range []string{"azure-proxy-agent.8", "msp-validate.8"} {
		src, err := os.ReadFile(filepath.Join(o.Root, "internal/cmd/package/man", page))
		if err != nil {
			return nil, err
		}
		gz, err := gzipped(src)
		if err != nil {
			return nil, err
		}
		p, err := write(page+".gz", gz)
		if err != nil {
			return nil, err
		}
		contents = append(contents, file(o, p, "/usr/share/man/man8/"+page+".gz", 0o644, ""))
	}
	doc := "/usr/share/doc/azure-proxy-agent/"
	p, err := write("copyright", []byte(copyright))
	if err != nil {
		return nil, err
	}
	contents = append(contents, file(o, p, doc+"copyright", 0o644, ""))
	gz, err := gzipped([]byte(changelog(o)))
	if err != nil {
		return nil, err
	}
	if p, err = write("changelog.gz", gz); err != nil {
		return nil, err
	}
	contents = append(contents, file(o, p, doc+"changelog.gz", 0o644, ""))
	p, err = write("lintian-overrides", []byte(lintianOverrides))
	if err != nil {
		return nil, err
	}
	contents = append(contents, file(o, p, "/usr/share/lintian/overrides/azure-proxy-agent", 0o644, ""))
	return contents, nil
}

// packagedConfig is upstream's shipped file plus bpfPinFolder, so that the
// restart of an upgrade leaves no window in which callers bypass the agent.
func packagedConfig() ([]byte, error) {
	const anchor = "\n  \"canonicalRequestMode\""
	s := agent.ShippedConfigFile
	if !strings.Contains(s, anchor) {
		return nil, errors.New("agent.ShippedConfigFile changed shape: cannot add bpfPinFolder")
	}
	s = strings.Replace(s, anchor, "\n  \"bpfPinFolder\": \""+pinFolder+"\","+anchor, 1)
	if _, err := agent.ParseConfigFile([]byte(s)); err != nil {
		return nil, fmt.Errorf("packaged configuration: %w", err)
	}
	return []byte(s), nil
}

// gzipped compresses b with no name and no time in the header, as
// reproducible builds and lintian want.
func gzipped(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	w, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(b); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

const maintainer = "gpa maintainers <maintainers@users.noreply.r-seed-d91234d6.example>"

// copyright is Debian's machine-readable copyright file. The project has
// not published a license yet; the file says so rather than invent one.
const copyright = `Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: gpa
Source: https://github.com/metadatasec/gpa

Files: *
Copyright: 2026 gpa maintainers
License: gpa-unpublished

License: gpa-unpublished
 The gpa project has not published a license for this software yet.
 Until it does, ask its maintainers before redistributing it.
`

// changelog is the one-entry Debian changelog of a native package.
func changelog(o *options) string {
	return fmt.Sprintf("azure-proxy-agent (%s) unstable; urgency=medium\n\n"+
		"  * Built from the gpa repository; see its history for the changes.\n\n"+
		" -- %s  %s\n", debVersion(o.Version), maintainer, o.MTime.Format(time.RFC1123Z))
}

// rpmChangelog writes the one entry of the rpm's %changelog in nfpm's
// changelog format and returns its path.
func rpmChangelog(o *options, stage string) (string, error) {
	p := filepath.Join(stage, "changelog.yml")
	y := fmt.Sprintf("- semver: %q\n  date: %s\n  packager: %q\n  changes:\n    - note: %q\n",
		debVersion(o.Version)+"-1", o.MTime.Format(time.RFC3339), maintainer,
		"Built from the gpa repository; see its history for the changes.")
	return p, os.WriteFile(p, []byte(y), 0o644)
}

// debVersion is the version as dpkg sees it: a semver pre-release sorts
// before its release there only with "~".
func debVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	if base, pre, ok := strings.Cut(v, "-"); ok {
		return base + "~" + pre
	}
	return v
}

// lintianOverrides are the tags lintian reports on the .deb and why each is
// right for this package.
const lintianOverrides = `# Go links its programs statically (CGO_ENABLED=0): they run on every
# distribution without a C library of a given version, and the image
# builder's libc updates never change them.
azure-proxy-agent: statically-linked-binary [usr/sbin/azure-proxy-agent]
azure-proxy-agent: statically-linked-binary [usr/sbin/msp-validate]
# The latched keys are secrets: their folder, the local rules beside it and
# the state folder above them are root's alone (the agent refuses rules
# writable by others; the unit sets StateDirectoryMode=0700 too).
azure-proxy-agent: non-standard-dir-perm 0700 != 0755 [var/lib/azure-proxy-agent/]
azure-proxy-agent: non-standard-dir-perm 0700 != 0755 [var/lib/azure-proxy-agent/keys/]
azure-proxy-agent: non-standard-dir-perm 0700 != 0755 [var/lib/azure-proxy-agent/rules/]
`

func writePackage(o *options, format, arch string, contents files.Contents, stage string) (string, error) {
	pkgr, err := nfpm.Get(format)
	if err != nil {
		return "", err
	}
	scripts := filepath.Join(o.Root, "internal/cmd/package/scripts")
	info := &nfpm.Info{
		Name:        "azure-proxy-agent",
		Arch:        arch,
		Platform:    "linux",
		Version:     o.Version,
		Release:     "1",
		Section:     "net",
		Priority:    "optional",
		Maintainer:  maintainer,
		Vendor:      "gpa",
		Homepage:    "https://github.com/metadatasec/gpa",
		License:     "LicenseRef-gpa-unpublished",
		Description: description,
		MTime:       o.MTime,
		Overridables: nfpm.Overridables{
			Contents: contents,
			Umask:    0o022,
		},
	}
	switch format {
	case "deb":
		info.Release = "" // a native package: no Debian revision
		info.Scripts = nfpm.Scripts{
			PostInstall: filepath.Join(scripts, "deb-postinst"),
			PreRemove:   filepath.Join(scripts, "deb-prerm"),
			PostRemove:  filepath.Join(scripts, "deb-postrm"),
		}
	case "rpm":
		// lintian's overrides mean nothing to rpm; rpm wants its
		// documentation marked as such.
		info.Contents = nil
		for _, c := range contents {
			switch {
			case strings.HasPrefix(c.Destination, "/usr/share/lintian/"):
				continue
			case strings.HasPrefix(c.Destination, "/usr/share/doc/"), strings.HasPrefix(c.Destination, "/usr/share/man/"):
				d := *c
				d.Type = files.TypeRPMDoc
				c = &d
			}
			info.Contents = append(info.Contents, c)
		}
		log, err := rpmChangelog(o, stage)
		if err != nil {
			return "", err
		}
		info.Changelog = log
		info.Scripts = nfpm.Scripts{
			PostInstall: filepath.Join(scripts, "rpm-post"),
			PreRemove:   filepath.Join(scripts, "rpm-preun"),
			PostRemove:  filepath.Join(scripts, "rpm-postun"),
		}
		info.RPM.Group = "System Environment/Daemons"
		info.RPM.Summary = "Metadata Security Protocol guest agent (gpa)"
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.Validate(info); err != nil {
		return "", fmt.Errorf("%s %s: %w", format, arch, err)
	}
	path := filepath.Join(o.Out, pkgr.ConventionalFileName(info))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := pkgr.Package(info, f); err != nil {
		f.Close()
		return "", fmt.Errorf("%s %s: %w", format, arch, err)
	}
	return path, f.Close()
}

const description = `Metadata Security Protocol guest agent (gpa)
 azure-proxy-agent is a drop-in for the Azure Guest Proxy Agent on Linux:
 it latches the key the Azure host hands to the VM, redirects connections
 to the WireServer, IMDS and the HostGAPlugin to a local proxy with eBPF
 cgroup programs, and lets each request through, signed, only when the
 VM's rules allow its caller. msp-validate checks a VM's set-up.`
