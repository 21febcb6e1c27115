package main

import (
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestRatiosAndDiffers(t *testing.T) {
	rows := []struct {
		name          string
		fork, up      []float64
		ratios, apart string
	}{
		{name: "apart", fork: []float64{1, 2, 3}, up: []float64{10, 20, 30}, ratios: "0.10 [0.10-0.10]", apart: "yes"},
		{name: "overlapping", fork: []float64{9, 10, 12}, up: []float64{10, 11, 9}, ratios: "1.00 [0.90-1.33]", apart: "noise"},
		{name: "one round", fork: []float64{2}, up: []float64{4}, ratios: "0.50", apart: "-"},
		{name: "upstream zero", fork: []float64{1, 2}, up: []float64{0, 0}, ratios: "-", apart: "yes"},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			assert.Equal(t, row.ratios, ratios(row.fork, row.up))
			assert.Equal(t, row.apart, differs(row.fork, row.up))
		})
	}
}

func TestCountsFirst(t *testing.T) {
	names := []string{"memory: live heap per container (KiB)", "200: relist p99 (ms)", "50: relist p99 (ms)", "50: RSS (MiB)"}
	sort.Slice(names, func(i, j int) bool { return countsFirst(names[i], names[j]) })
	assert.Equal(t, []string{"50: RSS (MiB)", "50: relist p99 (ms)", "200: relist p99 (ms)", "memory: live heap per container (KiB)"}, names)
}

func TestCases(t *testing.T) {
	rows := []struct {
		name   string
		p      plan
		node   string
		rounds []int
	}{
		{name: "default", p: plan{delay: time.Second, rounds: 3}, node: "node at [50 200] containers, idle then busy for 1m0s", rounds: []int{2, 2, 2, 2, 3}},
		{name: "big", p: plan{delay: time.Second, rounds: 3, big: true}, node: "node at [50 200 500] containers, idle then busy for 1m0s", rounds: []int{2, 2, 2, 2, 3}},
		{name: "quick", p: plan{delay: time.Second, rounds: 1, quick: true, big: true}, node: "node at [10 20] containers, idle then busy for 15s", rounds: []int{1, 1, 1, 1, 1}},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			var node []string
			var rounds []int
			for _, c := range cases(row.p) {
				if strings.HasPrefix(c.name, nodeName) {
					node = append(node, c.name)
				}
				rounds = append(rounds, row.p.roundsOf(c))
			}
			assert.Equal(t, []string{row.node}, node)
			assert.Equal(t, row.rounds, rounds, "incident cases run 2 rounds, the node the plan's")
		})
	}
}
