// rulecheck validates Prometheus rule files with Prometheus's own parser (model/rulefmt: the YAML
// structure, every PromQL expression, label and annotation templates), which is what
// `promtool check rules` runs, without promtool's service-discovery dependencies (hundreds of
// modules). `-exprs FILE` parses one PromQL expression per line (the dashboard's queries).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	exprs := flag.String("exprs", "", "file with one PromQL expression per line")
	flag.Parse()
	p := parser.NewParser(parser.Options{})
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	failed := false
	for _, path := range flag.Args() {
		groups, errs := rulefmt.ParseFile(path, false, model.UTF8Validation, p, logger)
		if len(errs) > 0 {
			failed = true
			for _, err := range errs {
				fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			}
			continue
		}
		n := 0
		for _, g := range groups.Groups {
			n += len(g.Rules)
		}
		fmt.Printf("%s: SUCCESS: %d rules found\n", path, n)
	}
	if *exprs != "" {
		f, err := os.Open(*exprs)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer f.Close()
		scanner := bufio.NewScanner(f)
		n := 0
		for scanner.Scan() {
			line := strings.TrimSpace(scanner.Text())
			if line == "" {
				continue
			}
			n++
			if _, err := p.ParseExpr(line); err != nil {
				failed = true
				fmt.Fprintf(os.Stderr, "%s: %q: %v\n", *exprs, line, err)
			}
		}
		fmt.Printf("%s: %d expressions parsed\n", *exprs, n)
	}
	if failed {
		os.Exit(1)
	}
}
