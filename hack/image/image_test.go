package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// repoRoot is annex's checkout, found from this file.
var repoRoot = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}()

// wantFiles is the image's whole filesystem: the binary and the base files,
// nothing else (no shell, no package manager).
var wantFiles = []string{
	"annex-apiserver",
	"etc/", "etc/group", "etc/passwd", "etc/ssl/", "etc/ssl/certs/", "etc/ssl/certs/ca-certificates.crt",
	"home/", "home/nonroot/", "tmp/",
}

// TestBuildIsReproducible builds an image twice from copies of one binary
// with different file times: the digests and archives are the same; and a
// different SOURCE_DATE_EPOCH changes the digest.
func TestBuildIsReproducible(t *testing.T) {
	dir := t.TempDir()
	binary := []byte("\x7fELF not really a binary")
	o := BuildOptions{Repository: "annex.test/annex-apiserver", Version: "v0.1.0", Revision: "0123abcd", Epoch: 1700000000}
	build := func(name string, mtime time.Time, epoch int64) (v1.Hash, []byte) {
		t.Helper()
		var platforms []PlatformBinary
		for _, arch := range []string{"amd64", "arm64"} {
			p := filepath.Join(dir, name+"-"+arch)
			if err := os.WriteFile(p, binary, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, mtime, mtime); err != nil {
				t.Fatal(err)
			}
			platforms = append(platforms, PlatformBinary{OS: "linux", Architecture: arch, Path: p})
		}
		o := o
		o.Platforms, o.Epoch = platforms, epoch
		out := filepath.Join(dir, name+".oci.tar")
		digest, err := Build(o, out)
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return digest, data
	}
	d1, a1 := build("first", time.Unix(1, 0), o.Epoch)
	d2, a2 := build("second", time.Now(), o.Epoch)
	if d1 != d2 {
		t.Errorf("two builds of the same binary: digests %s and %s", d1, d2)
	}
	if !bytes.Equal(a1, a2) {
		t.Errorf("two builds of the same binary: the archives differ")
	}
	d3, _ := build("later", time.Unix(1, 0), o.Epoch+1)
	if d3 == d1 {
		t.Errorf("a different SOURCE_DATE_EPOCH gave the same digest %s: the times in the image do not come from it", d1)
	}

	idx, err := ReadArchive(filepath.Join(dir, "first.oci.tar"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	checkIndex(t, idx, []string{"linux/amd64", "linux/arm64"}, o.Version)
}

// TestImage checks the image `make test-image` built (ANNEX_IMAGE_ARCHIVE) as
// a user of it would notice: its platforms, entrypoint, user, labels and
// files; that its binary is static and reports the image's version; that the
// Helm chart's defaults name it; and that building it again gives the same
// digest.
func TestImage(t *testing.T) {
	archive := os.Getenv("ANNEX_IMAGE_ARCHIVE")
	if archive == "" {
		t.Skip("ANNEX_IMAGE_ARCHIVE is not set: `make test-image` builds the image and runs this test")
	}
	platforms := strings.Fields(os.Getenv("ANNEX_IMAGE_PLATFORMS"))
	if len(platforms) == 0 {
		platforms = []string{"linux/amd64", "linux/arm64"}
	}
	idx, err := ReadArchive(archive, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	reference := archiveReference(t, archive)
	repository, tag, _ := strings.Cut(reference, ":")
	labels := checkIndex(t, idx, platforms, tag)
	for _, l := range []string{"source", "version", "revision", "licenses"} {
		if labels["org.opencontainers.image."+l] == "" {
			t.Errorf("the image has no label org.opencontainers.image.%s", l)
		}
	}

	t.Run("the binary is static and reports the image's version", func(t *testing.T) {
		img, err := PlatformImage(idx, "linux/amd64")
		if err != nil {
			t.Fatal(err)
		}
		data, err := FileFromImage(img, Entrypoint)
		if err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(t.TempDir(), "annex-apiserver")
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Error("the binary has a dynamic loader (PT_INTERP): it is not static, and the image has no libc")
			}
		}
		if runtime.GOOS+"/"+runtime.GOARCH != "linux/amd64" {
			t.Skipf("cannot run a linux/amd64 binary on %s/%s", runtime.GOOS, runtime.GOARCH)
		}
		out, err := exec.Command(bin, "--version").CombinedOutput()
		if err != nil {
			t.Fatalf("annex-apiserver --version: %v\n%s", err, out)
		}
		t.Logf("annex-apiserver --version: %s", strings.TrimSpace(string(out)))
		for _, want := range []string{"annex-apiserver " + tag + ",", "commit " + labels["org.opencontainers.image.revision"]} {
			if !strings.Contains(string(out), want) {
				t.Errorf("annex-apiserver --version says %q, want it to contain %q", out, want)
			}
		}
	})

	t.Run("the chart's defaults name this image", func(t *testing.T) {
		appVersion := chartField(t, "Chart.yaml", `(?m)^appVersion:\s*"?([^"\s]+)"?\s*$`)
		chartRepository := chartField(t, "values.yaml", `(?m)^image:\n(?:\s+#.*\n)*\s+repository:\s*"?([^"\s]*)"?\s*$`)
		if chartRepository != repository {
			t.Errorf("the chart's image.repository is %q, the image's %q", chartRepository, repository)
		}
		if err := tagAgrees(tag, appVersion); err != nil {
			t.Error(err)
		}
	})

	t.Run("a second build gives the same digest", func(t *testing.T) {
		second := filepath.Join(t.TempDir(), "second.oci.tar")
		cmd := exec.Command("make", "-C", repoRoot, "image", "IMAGE_PLATFORMS="+strings.Join(platforms, " "), "IMAGE_ARCHIVE="+second)
		// Computed afresh from the checkout, as a separate build would.
		for _, e := range os.Environ() {
			switch strings.SplitN(e, "=", 2)[0] {
			case "VERSION", "SOURCE_DATE_EPOCH", "MAKEFLAGS", "MFLAGS", "MAKELEVEL":
				continue
			}
			cmd.Env = append(cmd.Env, e)
		}
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make image: %v\n%s", err, out)
		}
		t.Logf("second build: %s", time.Since(start).Round(time.Second))
		idx2, err := ReadArchive(second, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		d1, err := idx.Digest()
		if err != nil {
			t.Fatal(err)
		}
		d2, err := idx2.Digest()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("digests: %s, %s", d1, d2)
		if d1 != d2 {
			t.Errorf("two builds of one commit: digests %s and %s", d1, d2)
		}
	})
}

// checkIndex checks the platforms of idx and each image's configuration and
// files, and returns the labels.
func checkIndex(t *testing.T, idx v1.ImageIndex, platforms []string, version string) map[string]string {
	t.Helper()
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range m.Manifests {
		if d.Platform != nil {
			got = append(got, d.Platform.OS+"/"+d.Platform.Architecture)
		}
	}
	sort.Strings(got)
	want := append([]string(nil), platforms...)
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("the image's platforms are %v, want %v", got, want)
	}
	var labels map[string]string
	for _, p := range platforms {
		img, err := PlatformImage(idx, p)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.OS+"/"+cfg.Architecture != p {
			t.Errorf("%s: the configuration says %s/%s", p, cfg.OS, cfg.Architecture)
		}
		if strings.Join(cfg.Config.Entrypoint, " ") != Entrypoint {
			t.Errorf("%s: entrypoint %v, want [%s]", p, cfg.Config.Entrypoint, Entrypoint)
		}
		if cfg.Config.User != "65532:65532" {
			t.Errorf("%s: user %q, want 65532:65532", p, cfg.Config.User)
		}
		if v := cfg.Config.Labels["org.opencontainers.image.version"]; v != version {
			t.Errorf("%s: version label %q, want %q", p, v, version)
		}
		labels = cfg.Config.Labels
		files, passwd := imageFiles(t, img)
		if strings.Join(files, " ") != strings.Join(wantFiles, " ") {
			t.Errorf("%s: the image's files are\n  %v\nwant\n  %v", p, files, wantFiles)
		}
		if !strings.Contains(passwd, "nonroot:x:65532:65532:") {
			t.Errorf("%s: /etc/passwd has no nonroot user 65532:\n%s", p, passwd)
		}
	}
	return labels
}

// imageFiles lists the flattened filesystem of img, and returns /etc/passwd.
func imageFiles(t *testing.T, img v1.Image) (files []string, passwd string) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(hdr.Name, "./")
		if hdr.Typeflag == tar.TypeDir && !strings.HasSuffix(name, "/") {
			name += "/"
		}
		files = append(files, name)
		if hdr.Name == "etc/passwd" {
			data, _ := io.ReadAll(tr)
			passwd = string(data)
		}
	}
	sort.Strings(files)
	return files, passwd
}

// archiveReference is the name index.json gives the image.
func archiveReference(t *testing.T, archive string) string {
	t.Helper()
	dir := t.TempDir()
	if err := untar(archive, dir); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	ref := regexp.MustCompile(`"org.opencontainers.image.ref.name":\s*"([^"]+)"`).FindStringSubmatch(string(data))
	if ref == nil {
		t.Fatalf("index.json names no image:\n%s", data)
	}
	return ref[1]
}

func chartField(t *testing.T, file, pattern string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "charts", "annex", file))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(pattern).FindStringSubmatch(string(data))
	if m == nil {
		t.Fatalf("charts/annex/%s: nothing matches %s", file, pattern)
	}
	return m[1]
}
