package livelog

import (
	"strings"
	"unicode/utf8"
)

// MinSecretLen is the length in bytes of the shortest secret value that
// is masked. Shorter values are not masked: hiding every "a" of a log
// hides nothing and tells where the secret is (GitLab and Buildkite draw
// the same line).
const MinSecretLen = 4

// Masker replaces every occurrence of its secret values by Mask in one
// pass over the input: the bytes of all occurrences (overlapping ones
// included) are found with an Aho-Corasick automaton, each run of
// overlapping occurrences becomes one Mask, and what was replaced is never
// scanned again. The output is at most 1.5 times as long as the input.
// A Masker is immutable and safe for concurrent use; the zero value and
// nil mask nothing.
type Masker struct {
	states []acState
	maxLen int
}

// acState is one node of the automaton: its children by byte, the state
// its longest proper suffix leads to, and the length of the longest
// secret that ends here (0 if none).
type acState struct {
	next map[byte]int32
	fail int32
	out  int32
}

// SecretParts returns the parts of a secret value that a Masker hides:
// its lines (a log is split into lines before masking), without a
// trailing carriage return, empty ones left out. short counts the parts
// shorter than MinSecretLen, which are left out too.
func SecretParts(value string) (parts []string, short int) {
	for _, part := range strings.Split(value, "\n") {
		part = strings.TrimSuffix(part, "\r")
		switch {
		case part == "":
		case len(part) < MinSecretLen:
			short++
		default:
			parts = append(parts, part)
		}
	}
	return parts, short
}

// NewMasker returns a Masker of the values, each split by SecretParts.
// short counts the parts left out because they are shorter than
// MinSecretLen; the caller should warn about them, without their value.
func NewMasker(values ...string) (m *Masker, short int) {
	m = &Masker{states: []acState{{}}}
	for _, v := range values {
		parts, n := SecretParts(v)
		short += n
		for _, p := range parts {
			m.add(p)
		}
	}
	m.build()
	return m, short
}

func (m *Masker) add(p string) {
	s := int32(0)
	for i := 0; i < len(p); i++ {
		st := &m.states[s]
		n, ok := st.next[p[i]]
		if !ok {
			if st.next == nil {
				st.next = make(map[byte]int32, 1)
			}
			n = int32(len(m.states))
			st.next[p[i]] = n
			m.states = append(m.states, acState{})
		}
		s = n
	}
	m.states[s].out = int32(len(p))
	m.maxLen = max(m.maxLen, len(p))
}

// build sets the failure links breadth first; a state's out becomes the
// longest secret that is a suffix of what leads to it.
func (m *Masker) build() {
	queue := make([]int32, 0, len(m.states))
	for _, c := range m.states[0].next {
		m.states[c].fail = 0
		queue = append(queue, c)
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		for b, c := range m.states[s].next {
			f := m.states[s].fail
			for {
				if n, ok := m.states[f].next[b]; ok && n != c {
					m.states[c].fail = n
					break
				}
				if f == 0 {
					m.states[c].fail = 0
					break
				}
				f = m.states[f].fail
			}
			if m.states[c].out == 0 {
				m.states[c].out = m.states[m.states[c].fail].out
			}
			queue = append(queue, c)
		}
	}
}

func (m *Masker) step(s int32, b byte) int32 {
	for {
		if n, ok := m.states[s].next[b]; ok {
			return n
		}
		if s == 0 {
			return 0
		}
		s = m.states[s].fail
	}
}

// Empty reports whether m masks nothing.
func (m *Masker) Empty() bool { return m == nil || m.maxLen == 0 }

// MaxLen is the length of the longest secret part m masks.
func (m *Masker) MaxLen() int {
	if m == nil {
		return 0
	}
	return m.maxLen
}

// span is a half-open range [start, end) of bytes to mask.
type span struct{ start, end int }

// spans returns the ranges of s to mask, in order, overlapping
// occurrences merged. The first covered bytes of s are masked whatever
// they hold.
func (m *Masker) spans(s string, covered int) []span {
	var out []span
	if covered > 0 {
		out = append(out, span{0, min(covered, len(s))})
	}
	if m.Empty() {
		return out
	}
	st := int32(0)
	for i := 0; i < len(s); i++ {
		st = m.step(st, s[i])
		n := int(m.states[st].out)
		if n == 0 {
			continue
		}
		sp := span{i + 1 - n, i + 1}
		for len(out) > 0 && out[len(out)-1].end > sp.start {
			sp.start = min(sp.start, out[len(out)-1].start)
			out = out[:len(out)-1]
		}
		out = append(out, sp)
	}
	return out
}

// apply writes s with the spans replaced by Mask.
func apply(s string, spans []span) string {
	if len(spans) == 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + len(spans)*len(Mask))
	at := 0
	for _, sp := range spans {
		b.WriteString(s[at:sp.start])
		b.WriteString(Mask)
		at = sp.end
	}
	b.WriteString(s[at:])
	return b.String()
}

// Mask returns s with every occurrence of a secret replaced by Mask.
func (m *Masker) Mask(s string) string {
	if m.Empty() {
		return s
	}
	return apply(s, m.spans(s, 0))
}

// ValidUTF8 returns s with every byte that is not part of valid UTF-8
// replaced by U+FFFD, the way encoding/json does: log lines are UTF-8
// text, and this is the one change made to their bytes. Other bytes, NUL
// and control characters included, are kept.
func ValidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// SafeCut returns how much of s, a line that has not ended yet, may be
// masked and written now: all of it but its last MaxLen()-1 bytes (they
// may start a secret that continues in what comes next; at least one
// byte goes), and never up to inside a secret (all of s when one secret covers the whole cut).
func (m *Masker) SafeCut(s string) int {
	if m.Empty() {
		return len(s)
	}
	at := max(len(s)-(m.MaxLen()-1), 1)
	for _, sp := range m.spans(s, 0) {
		if sp.start < at && at < sp.end {
			if sp.start == 0 {
				return len(s)
			}
			return sp.start
		}
	}
	return at
}
