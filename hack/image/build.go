package main

import (
	"archive/tar"
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/x509roots/fallback/bundle"
)

const (
	// Entrypoint is where the binary lives in the image.
	Entrypoint = "/annex-apiserver"
	// User is the numeric user and group annex runs as: nonroot, as in
	// distroless images, and what the Helm chart's securityContext sets.
	User = "65532:65532"
	uid  = 65532
)

// PlatformBinary is the annex-apiserver binary built for one platform.
type PlatformBinary struct {
	OS, Architecture, Path string
}

func (p PlatformBinary) String() string { return p.OS + "/" + p.Architecture + "=" + p.Path }

// BuildOptions describe the image.
type BuildOptions struct {
	Platforms  []PlatformBinary
	Repository string
	Version    string
	Revision   string
	Source     string
	Licenses   string
	// Epoch is SOURCE_DATE_EPOCH, in seconds: every file's time and the
	// image's creation time.
	Epoch int64
}

// Labels are the image's OCI annotations, as labels of its configuration.
func (o BuildOptions) Labels() map[string]string {
	labels := map[string]string{
		"org.opencontainers.image.title":       "annex-apiserver",
		"org.opencontainers.image.description": "An aggregated Kubernetes API server that hosts custom resources outside the cluster's etcd",
		"org.opencontainers.image.created":     o.created().Format(time.RFC3339),
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.revision":    o.Revision,
		"org.opencontainers.image.source":      o.Source,
		"org.opencontainers.image.licenses":    o.Licenses,
	}
	for k, v := range labels {
		if v == "" {
			delete(labels, k)
		}
	}
	return labels
}

func (o BuildOptions) created() time.Time { return time.Unix(o.Epoch, 0).UTC() }

// Reference is the name the archive gives the image: repository:version.
func (o BuildOptions) Reference() string { return o.Repository + ":" + o.Version }

// Build writes the multi-platform image as an OCI archive (a tar of an OCI
// image layout) at out and returns the digest of its image index.
func Build(o BuildOptions, out string) (v1.Hash, error) {
	if len(o.Platforms) == 0 {
		return v1.Hash{}, errors.New("no --platform given")
	}
	if o.Version == "" || o.Repository == "" {
		return v1.Hash{}, errors.New("--version and --repository are required")
	}
	idx, err := NewIndex(o)
	if err != nil {
		return v1.Hash{}, err
	}
	digest, err := idx.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	return digest, WriteArchive(idx, o.Reference(), o.created(), out)
}

// NewIndex assembles the image index: one image per platform, all sharing
// the layer of base files.
func NewIndex(o BuildOptions) (v1.ImageIndex, error) {
	base, err := layerOf(baseEntries(), o.created())
	if err != nil {
		return nil, fmt.Errorf("the base layer: %w", err)
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	seen := map[string]bool{}
	for _, p := range o.Platforms {
		if seen[p.OS+"/"+p.Architecture] {
			return nil, fmt.Errorf("platform %s/%s given twice", p.OS, p.Architecture)
		}
		seen[p.OS+"/"+p.Architecture] = true
		img, err := platformImage(o, p, base)
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", p.OS, p.Architecture, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: p.OS, Architecture: p.Architecture}},
		})
	}
	return idx, nil
}

func platformImage(o BuildOptions, p PlatformBinary, base v1.Layer) (v1.Image, error) {
	binary, err := os.ReadFile(p.Path)
	if err != nil {
		return nil, err
	}
	bin, err := layerOf([]entry{{name: strings.TrimPrefix(Entrypoint, "/"), mode: 0o755, data: binary}}, o.created())
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: o.created()}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: p.Architecture,
		OS:           p.OS,
		Created:      created,
		Config: v1.Config{
			Entrypoint: []string{Entrypoint},
			User:       User,
			WorkingDir: "/",
			Labels:     o.Labels(),
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	return mutate.Append(img,
		mutate.Addendum{Layer: base, MediaType: types.OCILayer, History: v1.History{
			Created: created, CreatedBy: "hack/image: /etc/passwd and /etc/group (nonroot 65532), CA certificates, /tmp",
		}},
		mutate.Addendum{Layer: bin, MediaType: types.OCILayer, History: v1.History{
			Created: created, CreatedBy: "hack/image: " + Entrypoint + " " + o.Version,
		}},
	)
}

// entry is one file or directory of a layer.
type entry struct {
	name string // relative, no leading slash; directories end in /
	mode int64
	uid  int
	data []byte
}

// baseEntries are the files a static Go binary needs from a base image.
func baseEntries() []entry {
	return []entry{
		{name: "etc/", mode: 0o755},
		{name: "etc/passwd", mode: 0o644, data: []byte(
			"root:x:0:0:root:/root:/sbin/nologin\n" +
				"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{name: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{name: "etc/ssl/", mode: 0o755},
		{name: "etc/ssl/certs/", mode: 0o755},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: caCertificates()},
		{name: "home/", mode: 0o755},
		{name: "home/nonroot/", mode: 0o700, uid: uid},
		{name: "tmp/", mode: 0o1777},
	}
}

// caCertificates is the Mozilla (NSS) root store as Go's x509roots module
// ships it, in the PEM bundle that Go and most TLS libraries read. Roots
// with a constraint (a distrust-after date) are left out: a PEM file cannot
// carry the constraint, and trusting them without it would widen trust.
// annex needs them for what it reaches without a CA of its own, such as a
// cluster's admission webhooks given by URL without a caBundle.
func caCertificates() []byte {
	var buf bytes.Buffer
	for root := range bundle.Roots() {
		if root.Constraint != nil {
			continue
		}
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: root.Certificate})
	}
	return buf.Bytes()
}

// layerOf makes an uncompressed, reproducible tar of entries into a layer
// (gzip-compressed by the library).
func layerOf(entries []entry, mtime time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.uid, ModTime: mtime, Format: tar.FormatPAX}
		if strings.HasSuffix(e.name, "/") {
			hdr.Typeflag = tar.TypeDir
		} else {
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// WriteBaseFiles writes the base layer's files under dir, for the
// Dockerfile, which copies them into a scratch image.
func WriteBaseFiles(dir string) error {
	for _, e := range baseEntries() {
		p := filepath.Join(dir, filepath.FromSlash(e.name))
		mode := fs.FileMode(e.mode & 0o777)
		if e.mode&0o1000 != 0 {
			mode |= fs.ModeSticky
		}
		if strings.HasSuffix(e.name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		} else if err := os.WriteFile(p, e.data, mode); err != nil {
			return err
		}
		if err := os.Chmod(p, mode); err != nil {
			return err
		}
	}
	return nil
}

// WriteArchive writes idx as an OCI image layout, tarred, at out. The
// layout's index.json names the image with reference, in the annotations
// docker, podman and containerd (ctr, kind) read a name from.
func WriteArchive(idx v1.ImageIndex, reference string, mtime time.Time, out string) error {
	dir, err := os.MkdirTemp("", "annex-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": reference,
		"io.containerd.image.name":          reference,
	})); err != nil {
		return err
	}
	return tarDir(dir, mtime, out)
}

// tarDir tars the files under dir, sorted, with fixed times and owners, so
// that the archive is as reproducible as the image.
func tarDir(dir string, mtime time.Time, out string) error {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			rel += "/"
		}
		names = append(names, rel)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	tw := tar.NewWriter(f)
	for _, name := range names {
		hdr := &tar.Header{Name: name, ModTime: mtime, Format: tar.FormatPAX}
		if strings.HasSuffix(name, "/") {
			hdr.Typeflag, hdr.Mode = tar.TypeDir, 0o755
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, 0o644, int64(len(data))
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

// ReadArchive reads an OCI archive written by WriteArchive back: the image
// index its layout names. It unpacks the archive into dir, from which the
// index reads its blobs as they are asked for; dir must outlive the index.
func ReadArchive(archive, dir string) (v1.ImageIndex, error) {
	if err := untar(archive, dir); err != nil {
		return nil, err
	}
	l, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	m, err := l.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(m.Manifests) != 1 || !m.Manifests[0].MediaType.IsIndex() {
		return nil, fmt.Errorf("%s: want one image index in index.json, found %d entries", archive, len(m.Manifests))
	}
	return l.ImageIndex(m.Manifests[0].Digest)
}

func untar(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Clean(hdr.Name)
		if !fs.ValidPath(name) {
			return fmt.Errorf("%s: unsafe path %q", archive, hdr.Name)
		}
		p := filepath.Join(dir, filepath.FromSlash(name))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			out, err := os.Create(p)
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, tr); err != nil {
				out.Close()
				return err
			}
			if err := out.Close(); err != nil {
				return err
			}
		}
	}
}

// PlatformImage returns the image of platform (os/arch) in idx.
func PlatformImage(idx v1.ImageIndex, platform string) (v1.Image, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var have []string
	for _, d := range m.Manifests {
		if d.Platform == nil {
			continue
		}
		p := d.Platform.OS + "/" + d.Platform.Architecture
		if p == platform {
			return idx.Image(d.Digest)
		}
		have = append(have, p)
	}
	return nil, fmt.Errorf("no image for %s (the index has %v)", platform, have)
}

// FileFromImage returns the contents of the regular file name in img's
// flattened filesystem.
func FileFromImage(img v1.Image, name string) ([]byte, error) {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	want := strings.TrimPrefix(path.Clean("/"+name), "/")
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("no file %s in the image", name)
		}
		if err != nil {
			return nil, err
		}
		if strings.TrimPrefix(path.Clean("/"+hdr.Name), "/") == want && hdr.Typeflag == tar.TypeReg {
			return io.ReadAll(tr)
		}
	}
}

// sourceDateEpoch reads $SOURCE_DATE_EPOCH.
func sourceDateEpoch() (int64, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return 0, errors.New("--epoch or SOURCE_DATE_EPOCH is required (make image sets it to the commit's time)")
	}
	return strconv.ParseInt(v, 10, 64)
}
