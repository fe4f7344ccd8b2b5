package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// listStats are the LIST latencies of one target at one object count.
type listStats struct {
	Objects int `json:"objects"`
	// Full is a list of the whole namespace in one response.
	Full latencies `json:"full"`
	// Paged is each page of a paginated list (limit PageLimit).
	Paged     latencies `json:"paged"`
	PageLimit int       `json:"pageLimit"`
	// Selector is a list with a label selector that matches nothing.
	Selector latencies `json:"selector"`
	Errors   int       `json:"errors"`
}

// listConfig says how many LIST samples to take.
type listConfig struct {
	Full, PagePasses, Selector, PageLimit int
}

// measureList times LISTs of shape s in ns on t. Bodies are read to the last
// byte and discarded (pages are decoded only for their continue token), so
// the figure is the server's time and the transfer, not client-side decoding.
func measureList(ctx context.Context, p *progress, t *target, s shape, ns string, objects int, cfg listConfig) listStats {
	path := t.listPath(s, ns)
	out := listStats{Objects: objects, PageLimit: cfg.PageLimit}
	var full, paged, sel []time.Duration
	for range cfg.Full {
		d, _, err := timedGet(ctx, t.Server, path, nil, false)
		if err != nil {
			out.Errors++
			p.logf("%s LIST full: %v", t.Name, err)
			continue
		}
		full = append(full, d)
	}
	for range cfg.PagePasses {
		cont := ""
		for {
			q := url.Values{"limit": {strconv.Itoa(cfg.PageLimit)}}
			if cont != "" {
				q.Set("continue", cont)
			}
			d, next, err := timedGet(ctx, t.Server, path, q, true)
			if err != nil {
				out.Errors++
				p.logf("%s LIST page: %v", t.Name, err)
				break
			}
			paged = append(paged, d)
			if cont = next; cont == "" {
				break
			}
		}
	}
	for range cfg.Selector {
		d, _, err := timedGet(ctx, t.Server, path, url.Values{"labelSelector": {nothingSelector}}, false)
		if err != nil {
			out.Errors++
			p.logf("%s LIST selector: %v", t.Name, err)
			continue
		}
		sel = append(sel, d)
	}
	out.Full, out.Paged, out.Selector = summarise(full), summarise(paged), summarise(sel)
	p.logf("%s LIST %s at %d: full p50 %.0fms p99 %.0fms (%d); page p50 %.1fms p99 %.1fms (%d); selector p50 %.1fms p99 %.1fms (%d)",
		t.Name, s.Name, objects, out.Full.P50, out.Full.P99, out.Full.N, out.Paged.P50, out.Paged.P99, out.Paged.N, out.Selector.P50, out.Selector.P99, out.Selector.N)
	return out
}

// timedGet GETs path with query from srv as JSON and times it to the last
// byte. With wantContinue it decodes the list's metadata.continue.
func timedGet(ctx context.Context, srv *server, path string, query url.Values, wantContinue bool) (time.Duration, string, error) {
	u := srv.Host + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Accept", "application/json")
	start := time.Now()
	resp, err := srv.HTTP.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, "", fmt.Errorf("GET %s: %s: %s", u, resp.Status, body)
	}
	if !wantContinue {
		_, err := io.Copy(io.Discard, resp.Body)
		return time.Since(start), "", err
	}
	body, err := io.ReadAll(resp.Body)
	d := time.Since(start)
	if err != nil {
		return 0, "", err
	}
	var list struct {
		Metadata struct {
			Continue string `json:"continue"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return 0, "", fmt.Errorf("decoding a page of %s: %w", u, err)
	}
	return d, list.Metadata.Continue, nil
}
