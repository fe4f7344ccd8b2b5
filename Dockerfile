# syntax=docker/dockerfile:1
#
# annex-apiserver's image, for those who build with Docker. `make image`
# builds the same layout without a container engine (hack/image): a static
# binary at /annex-apiserver as the entrypoint, run as 65532:65532, the base
# files (nonroot in /etc/passwd, CA certificates, /tmp) and no shell. The
# digest differs from make image's: Docker records its own metadata.
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=$(make -s version) \
#     --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) \
#     -t ghcr.io/annex-dev/annex-apiserver:$(make -s version) .
#
# The build context leaves .git out (.dockerignore), so the version comes
# from the build arguments; without them it is the chart's appVersion marked
# as a development build (hack/version.sh).

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION
ARG REVISION
ARG SOURCE_DATE_EPOCH=0
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY hack/image/go.mod hack/image/go.sum hack/image/
RUN cd hack/image && go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false -ldflags "-s -w $(hack/version.sh --ldflags)" \
      -o /out/annex-apiserver ./cmd/annex-apiserver
# The base files, from the same source as make image's base layer.
RUN cd hack/image && go run . rootfs --out=/rootfs && chown 65532:65532 /rootfs/home/nonroot

FROM scratch
ARG VERSION
ARG REVISION
# One copy of the whole tree keeps the modes (/tmp is 1777); the second gives
# nonroot its home.
COPY --from=build /rootfs/ /
COPY --from=build --chown=65532:65532 /rootfs/home/nonroot/ /home/nonroot/
COPY --from=build /out/annex-apiserver /annex-apiserver
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/annex-apiserver"]
LABEL org.opencontainers.image.title="annex-apiserver" \
      org.opencontainers.image.description="An aggregated Kubernetes API server that hosts custom resources outside the cluster's etcd" \
      org.opencontainers.image.source="https://github.com/annex-dev/annex" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION"
