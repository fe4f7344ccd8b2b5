package bench

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

var targetColors = map[string]color.Color{
	"A":             color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	"B":             color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	"C":             color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	configMapTarget: color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff},
}

// series is one line of a latency distribution plot.
type series struct {
	label   string
	target  string
	dashed  bool
	samples []time.Duration // sorted
}

// writePlots writes the PNGs into dir and returns their paths.
func writePlots(r *results, dir string) ([]string, error) {
	var files []string
	add := func(name string, p *plot.Plot, err error) error {
		if err != nil {
			return err
		}
		if p == nil {
			return nil
		}
		f := filepath.Join(dir, name)
		if err := p.Save(18*vg.Centimeter, 11*vg.Centimeter, f); err != nil {
			return err
		}
		files = append(files, f)
		return nil
	}
	for _, op := range []string{"create", "update", "get"} {
		var ss []series
		for _, t := range []string{"A", "B", "C"} {
			if c, ok := r.CRUD[shapeReport.Name][t]; ok {
				ss = append(ss, series{label: t, target: t, samples: pickOp(c, op).Latency.samples})
			}
		}
		if c, ok := r.CRUD[shapeConfigMap.Name][configMapTarget]; ok {
			ss = append(ss, series{label: configMapTarget, target: configMapTarget, samples: pickOp(c, op).Latency.samples})
		}
		p, err := cdfPlot(fmt.Sprintf("%s latency, report shape, %d clients", op, r.Plan.Clients), ss)
		if err := add("latency-"+op+".png", p, err); err != nil {
			return files, err
		}
	}
	var ss []series
	for _, t := range []string{"A", "B", "C"} {
		for i, w := range r.Plan.Watchers {
			if s, ok := r.Watch[t][watchKey(w)]; ok {
				ss = append(ss, series{label: fmt.Sprintf("%s, %d watchers", t, w), target: t, dashed: i == 0, samples: s.Latency.samples})
			}
		}
	}
	p, err := cdfPlot("watch latency, create response to event", ss)
	if err := add("latency-watch.png", p, err); err != nil {
		return files, err
	}
	ss = nil
	for _, t := range []string{"A", "B", "C"} {
		if l := r.Ladder.List[t]; len(l) > 0 {
			last := l[len(l)-1]
			ss = append(ss, series{label: fmt.Sprintf("%s, %d objects", t, last.Objects), target: t, samples: last.Paged.samples})
		}
	}
	p, err = cdfPlot(fmt.Sprintf("LIST page latency (limit %d)", r.Plan.ListLast.PageLimit), ss)
	if err := add("latency-list-page.png", p, err); err != nil {
		return files, err
	}
	p, err = memoryPlot(r)
	if err := add("memory.png", p, err); err != nil {
		return files, err
	}
	return files, nil
}

func pickOp(c crudStats, op string) opStats {
	switch op {
	case "create":
		return c.Create
	case "update":
		return c.Update
	}
	return c.Get
}

// cdfPlot draws the cumulative distribution of each series on a log scale
// of milliseconds; nil when there is nothing to draw.
func cdfPlot(title string, ss []series) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "latency (ms, log scale)"
	p.Y.Label.Text = "fraction of requests at or below"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top = false
	p.Legend.Left = false
	p.Add(plotter.NewGrid())
	drawn := 0
	for _, s := range ss {
		if len(s.samples) == 0 {
			continue
		}
		pts := cdfPoints(s.samples, 400)
		line, err := plotter.NewLine(pts)
		if err != nil {
			return nil, err
		}
		line.Color = targetColors[s.target]
		line.Width = vg.Points(1.5)
		if s.dashed {
			line.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		p.Add(line)
		p.Legend.Add(s.label, line)
		drawn++
	}
	if drawn == 0 {
		return nil, nil
	}
	return p, nil
}

// cdfPoints samples the distribution of sorted at most n times. Zero
// latencies (watch events before the response) are drawn at 0.01 ms, as a
// log scale has no 0.
func cdfPoints(sorted []time.Duration, n int) plotter.XYs {
	step := max(1, len(sorted)/n)
	var pts plotter.XYs
	for i := 0; i < len(sorted); i += step {
		pts = append(pts, plotter.XY{X: math.Max(ms(sorted[i]), 0.01), Y: float64(i+1) / float64(len(sorted))})
	}
	pts = append(pts, plotter.XY{X: math.Max(ms(sorted[len(sorted)-1]), 0.01), Y: 1})
	return pts
}

// memoryPlot draws the servers' memory against the number of report
// objects they hold.
func memoryPlot(r *results) (*plot.Plot, error) {
	m, counts := r.Ladder.Memory, r.Ladder.Counts
	if len(m["A"]) < 2 && len(m["B"]) < 2 {
		return nil, nil
	}
	p := plot.New()
	p.Title.Text = "server memory against report objects held (after a GC)"
	p.X.Label.Text = "objects"
	p.Y.Label.Text = "MiB"
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	highest := 0.0
	for _, t := range []string{"A", "B"} {
		name := map[string]string{"A": "A: kube-apiserver", "B": "B: annex (with its etcd)"}[t]
		for _, k := range []struct {
			label  string
			f      func(memory) float64
			dashed bool
		}{
			{"live heap", func(x memory) float64 { return x.HeapLive }, false},
			{"RSS", func(x memory) float64 { return x.RSS }, true},
		} {
			var pts plotter.XYs
			for i := range m[t] {
				if i < len(counts[t]) && !math.IsNaN(k.f(m[t][i])) {
					pts = append(pts, plotter.XY{X: float64(counts[t][i]), Y: k.f(m[t][i]) / (1 << 20)})
				}
			}
			if len(pts) == 0 {
				continue
			}
			for _, pt := range pts {
				highest = math.Max(highest, pt.Y)
			}
			line, points, err := plotter.NewLinePoints(pts)
			if err != nil {
				return nil, err
			}
			line.Color = targetColors[t]
			points.Color = targetColors[t]
			points.Shape = draw.CircleGlyph{}
			if k.dashed {
				line.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			}
			p.Add(line, points)
			p.Legend.Add(name+", "+k.label, line, points)
		}
	}
	// Room above the lines for the legend.
	p.Y.Min, p.Y.Max = 0, highest*1.4
	return p, nil
}
