package main

import (
	"fmt"
	"regexp"
	"strconv"
)

var (
	releaseRE  = regexp.MustCompile(`^v(\d+)\.(\d+)\.(\d+)$`)
	devRE      = regexp.MustCompile(`^(v\d+\.\d+\.\d+)-dev(-g[0-9a-f]+)?(-dirty)?$`)
	describeRE = regexp.MustCompile(`^(v\d+\.\d+\.\d+)(-\d+-g[0-9a-f]+)?(-dirty)?$`)
)

// tagAgrees says whether an image tag (annex's version, see
// hack/version.sh) agrees with the chart's appVersion, whose image the chart
// runs by default:
//   - a release (v0.2.0) is the appVersion;
//   - a development build in a clone without tags (v0.2.0-dev-g0123abcd) is
//     one of the appVersion;
//   - a later commit (v0.1.0-3-g0123abcd, what git describe says) comes from
//     a release no newer than the appVersion.
func tagAgrees(tag, appVersion string) error {
	if !releaseRE.MatchString(appVersion) {
		return fmt.Errorf("the chart's appVersion %q is not a release version like v1.2.3", appVersion)
	}
	if m := devRE.FindStringSubmatch(tag); m != nil {
		if m[1] != appVersion {
			return fmt.Errorf("image tag %s is a development build of %s, but the chart's appVersion is %s", tag, m[1], appVersion)
		}
		return nil
	}
	m := describeRE.FindStringSubmatch(tag)
	if m == nil {
		return fmt.Errorf("image tag %q is not a version hack/version.sh makes", tag)
	}
	if m[2] == "" {
		if m[1] != appVersion {
			return fmt.Errorf("image tag %s is a release, but the chart's appVersion is %s: set appVersion in charts/annex/Chart.yaml in the release commit", tag, appVersion)
		}
		return nil
	}
	if compareRelease(m[1], appVersion) > 0 {
		return fmt.Errorf("image tag %s comes after release %s, newer than the chart's appVersion %s", tag, m[1], appVersion)
	}
	return nil
}

// compareRelease compares two vX.Y.Z versions.
func compareRelease(a, b string) int {
	ma, mb := releaseRE.FindStringSubmatch(a), releaseRE.FindStringSubmatch(b)
	for i := 1; i <= 3; i++ {
		x, _ := strconv.Atoi(ma[i])
		y, _ := strconv.Atoi(mb[i])
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}
