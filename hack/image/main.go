// Command image assembles annex-apiserver's container image without a
// container engine, with github.com/google/go-containerregistry, and reads it
// back. It is its own module so that its dependencies stay out of annex's
// go.mod. `make image` runs it.
//
//	image build   --platform linux/amd64=bin/linux-amd64/annex-apiserver ... --out bin/annex-apiserver.oci.tar
//	image rootfs  --out DIR       the base files alone (the Dockerfile copies them)
//	image extract --archive A --platform linux/amd64 --file annex-apiserver --out FILE
//	image digest  --archive A     the digest of the image index
//
// The image has no base to pull: a layer of base files (an /etc/passwd entry
// for nonroot, CA certificates, /tmp), then a layer holding the static binary
// at /annex-apiserver, its entrypoint, run as 65532:65532. Everything that
// could vary between two builds of one commit is fixed: file times and the
// image's creation time are SOURCE_DATE_EPOCH, owners are numeric, entries are
// sorted, and the CA certificates come from a pinned Go module rather than
// the build machine. So the same commit gives the same digest.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "build":
		err = runBuild(os.Args[2:])
	case "rootfs":
		err = runRootfs(os.Args[2:])
	case "extract":
		err = runExtract(os.Args[2:])
	case "digest":
		err = runDigest(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "image %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: image build|rootfs|extract|digest [flags]")
	os.Exit(2)
}

// platformBinaries collects repeated --platform os/arch=path flags.
type platformBinaries []PlatformBinary

func (p *platformBinaries) String() string { return fmt.Sprint(*p) }

func (p *platformBinaries) Set(v string) error {
	platform, path, ok := strings.Cut(v, "=")
	os, arch, ok2 := strings.Cut(platform, "/")
	if !ok || !ok2 || os == "" || arch == "" || path == "" {
		return fmt.Errorf("want os/arch=path, not %q", v)
	}
	*p = append(*p, PlatformBinary{OS: os, Architecture: arch, Path: path})
	return nil
}

func runBuild(args []string) error {
	fs := flag.NewFlagSet("build", flag.ExitOnError)
	var o BuildOptions
	var platforms platformBinaries
	fs.Var(&platforms, "platform", "os/arch=path of the binary for that platform (repeat for each platform)")
	fs.StringVar(&o.Repository, "repository", "ghcr.io/annex-dev/annex-apiserver", "the image's repository, for the name tools give it when they load the archive")
	fs.StringVar(&o.Version, "version", "", "the release version: the image's tag and its version label")
	fs.StringVar(&o.Revision, "revision", "", "the commit, for the revision label")
	fs.StringVar(&o.Source, "source", "", "URL of the source repository, for the source label")
	fs.StringVar(&o.Licenses, "licenses", "", "SPDX expression of the licenses, for the licenses label")
	fs.Int64Var(&o.Epoch, "epoch", -1, "SOURCE_DATE_EPOCH: every time in the image (default: $SOURCE_DATE_EPOCH)")
	out := fs.String("out", "", "the OCI archive to write")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.Platforms = platforms
	if o.Epoch < 0 {
		epoch, err := sourceDateEpoch()
		if err != nil {
			return err
		}
		o.Epoch = epoch
	}
	if *out == "" {
		return fmt.Errorf("--out is required")
	}
	digest, err := Build(o, *out)
	if err != nil {
		return err
	}
	fmt.Printf("%s %s:%s %s\n", *out, o.Repository, o.Version, digest)
	return nil
}

func runRootfs(args []string) error {
	fs := flag.NewFlagSet("rootfs", flag.ExitOnError)
	out := fs.String("out", "", "directory to write the base files into")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("--out is required")
	}
	return WriteBaseFiles(*out)
}

func runExtract(args []string) error {
	fs := flag.NewFlagSet("extract", flag.ExitOnError)
	archive := fs.String("archive", "", "the OCI archive")
	platform := fs.String("platform", "linux/amd64", "os/arch of the image to read")
	file := fs.String("file", "annex-apiserver", "path of the file in the image")
	out := fs.String("out", "", "where to write it (mode 0755)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return withArchive(*archive, func(idx v1.ImageIndex) error {
		img, err := PlatformImage(idx, *platform)
		if err != nil {
			return err
		}
		data, err := FileFromImage(img, *file)
		if err != nil {
			return err
		}
		return os.WriteFile(*out, data, 0o755)
	})
}

func runDigest(args []string) error {
	fs := flag.NewFlagSet("digest", flag.ExitOnError)
	archive := fs.String("archive", "", "the OCI archive")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return withArchive(*archive, func(idx v1.ImageIndex) error {
		d, err := idx.Digest()
		if err != nil {
			return err
		}
		fmt.Println(d)
		return nil
	})
}

// withArchive calls fn with the image index of an OCI archive, unpacked into
// a temporary directory that is removed afterwards.
func withArchive(archive string, fn func(v1.ImageIndex) error) error {
	dir, err := os.MkdirTemp("", "annex-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	idx, err := ReadArchive(archive, dir)
	if err != nil {
		return err
	}
	return fn(idx)
}
