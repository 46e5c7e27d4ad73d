// Command aurasealgo checks AuraSeal's ledger with Go's reference code
// (golang.org/x/mod/sumdb/note and sumdb/tlog). Built by the test harness:
//
//	GO111MODULE=off GOPATH=<tmp>:/usr/share/gocode go build aurasealgo
//
// Subcommands (exit 0 = OK, 1 = check failed, 2 = usage):
//
//	sign SKEY                 sign the note text on stdin, print the signed note
//	open VKEY [WVKEY...]      open the note on stdin with the log key (0x01) and
//	                          witness cosignature keys (0x04); print the text
//	keygen NAME               print a fresh signer key and verifier key
//	tiles URL VKEY OLDNOTE INDEXES [WVKEY...]
//	                          read URL/checkpoint and tiles over HTTP; check the
//	                          signature (and every witness cosignature), each leaf
//	                          in INDEXES (comma separated) from the entry bundles
//	                          with ProveRecord/CheckRecord, and the consistency of
//	                          the checkpoint in file OLDNOTE with ProveTree/CheckTree
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

// cosigVerifier checks C2SP tlog-cosignature/v1 (algorithm 0x04) signatures.
type cosigVerifier struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func (v *cosigVerifier) Name() string    { return v.name }
func (v *cosigVerifier) KeyHash() uint32 { return v.hash }
func (v *cosigVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	ts := binary.BigEndian.Uint64(sig[:8])
	m := append([]byte(fmt.Sprintf("cosignature/v1\ntime %d\n", ts)), msg...)
	return ed25519.Verify(v.key, m, sig[8:])
}

func newCosigVerifier(vkey string) (note.Verifier, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, errors.New("malformed witness key")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 33 || raw[0] != 0x04 {
		return nil, errors.New("not a cosignature/v1 key")
	}
	h := sha256.New()
	h.Write([]byte(parts[0] + "\n"))
	h.Write(raw)
	id := binary.BigEndian.Uint32(h.Sum(nil)[:4])
	want, err := strconv.ParseUint(parts[1], 16, 32)
	if err != nil || uint32(want) != id {
		return nil, errors.New("witness key id mismatch")
	}
	return &cosigVerifier{name: parts[0], hash: id, key: ed25519.PublicKey(raw[1:])}, nil
}

func verifiers(logKey string, witnessKeys []string) (note.Verifier, []note.Verifier) {
	lv, err := note.NewVerifier(logKey)
	if err != nil {
		fail("log key: %v", err)
	}
	var ws []note.Verifier
	for _, k := range witnessKeys {
		w, err := newCosigVerifier(k)
		if err != nil {
			fail("witness key: %v", err)
		}
		ws = append(ws, w)
	}
	return lv, ws
}

// openNote opens msg and requires the log signature and every witness cosignature.
func openNote(msg []byte, logKey string, witnessKeys []string) *note.Note {
	lv, ws := verifiers(logKey, witnessKeys)
	n, err := note.Open(msg, note.VerifierList(append([]note.Verifier{lv}, ws...)...))
	if err != nil {
		fail("note.Open: %v", err)
	}
	got := map[string]bool{}
	for _, s := range n.Sigs {
		got[fmt.Sprintf("%s/%08x", s.Name, s.Hash)] = true
	}
	for _, v := range append([]note.Verifier{lv}, ws...) {
		if !got[fmt.Sprintf("%s/%08x", v.Name(), v.KeyHash())] {
			fail("no valid signature by %s", v.Name())
		}
	}
	return n
}

type checkpoint struct {
	origin string
	size   int64
	root   tlog.Hash
}

func parseCheckpoint(text string) checkpoint {
	lines := strings.SplitN(text, "\n", 4)
	if len(lines) < 4 {
		fail("checkpoint too short")
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != lines[1] {
		fail("bad tree size %q", lines[1])
	}
	h, err := tlog.ParseHash(lines[2])
	if err != nil {
		fail("bad root %q", lines[2])
	}
	return checkpoint{lines[0], n, h}
}

func get(url string) []byte {
	resp, err := http.Get(url)
	if err != nil {
		fail("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		fail("GET %s: status %d %v", url, resp.StatusCode, err)
	}
	return body
}

// c2spPath maps Go's tile path (tile/8/L/N, tile/8/data/N) to C2SP tlog-tiles.
func c2spPath(t tlog.Tile) string {
	p := t.Path()
	p = strings.Replace(p, "tile/8/data/", "tile/entries/", 1)
	return strings.Replace(p, "tile/8/", "tile/", 1)
}

type httpTiles struct{ base string }

func (r *httpTiles) Height() int { return 8 }
func (r *httpTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		out[i] = get(r.base + "/" + c2spPath(t))
	}
	return out, nil
}
func (r *httpTiles) SaveTiles(tiles []tlog.Tile, data [][]byte) {}

// entry returns leaf i's bytes from its entry bundle (uint16 length-prefixed).
func entry(base string, size int64, i int64) []byte {
	t := tlog.Tile{H: 8, L: -1, N: i / 256, W: 256}
	if rest := size - t.N*256; rest < 256 {
		t.W = int(rest)
	}
	data := get(base + "/" + c2spPath(t))
	for k := int64(0); ; k++ {
		if len(data) < 2 {
			fail("entry bundle %s too short", c2spPath(t))
		}
		n := int(binary.BigEndian.Uint16(data))
		if len(data) < 2+n {
			fail("entry bundle %s truncated", c2spPath(t))
		}
		if k == i%256 {
			return data[2 : 2+n]
		}
		data = data[2+n:]
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: aurasealgo sign|open|keygen|tiles ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "keygen":
		skey, vkey, err := note.GenerateKey(rand.Reader, os.Args[2])
		if err != nil {
			fail("%v", err)
		}
		fmt.Println(skey)
		fmt.Println(vkey)
	case "sign":
		s, err := note.NewSigner(os.Args[2])
		if err != nil {
			fail("signer: %v", err)
		}
		text, _ := io.ReadAll(os.Stdin)
		msg, err := note.Sign(&note.Note{Text: string(text)}, s)
		if err != nil {
			fail("sign: %v", err)
		}
		os.Stdout.Write(msg)
	case "open":
		msg, _ := io.ReadAll(os.Stdin)
		n := openNote(msg, os.Args[2], os.Args[3:])
		os.Stdout.WriteString(n.Text)
	case "tiles":
		base, logKey, oldPath, idx := os.Args[2], os.Args[3], os.Args[4], os.Args[5]
		ws := os.Args[6:]
		n := openNote(get(base+"/checkpoint"), logKey, ws)
		cp := parseCheckpoint(n.Text)
		tree := tlog.Tree{N: cp.size, Hash: cp.root}
		hr := tlog.TileHashReader(tree, &httpTiles{base})
		if th, err := tlog.TreeHash(cp.size, hr); err != nil || th != cp.root {
			fail("TreeHash from tiles: %v", err)
		}
		for _, s := range strings.Split(idx, ",") {
			i, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				fail("index %q", s)
			}
			leaf := tlog.RecordHash(entry(base, cp.size, i))
			stored, err := hr.ReadHashes([]int64{tlog.StoredHashIndex(0, i)})
			if err != nil || stored[0] != leaf {
				fail("entry %d does not hash to its level-0 tile hash: %v", i, err)
			}
			p, err := tlog.ProveRecord(cp.size, i, hr)
			if err != nil {
				fail("ProveRecord(%d): %v", i, err)
			}
			if err := tlog.CheckRecord(p, cp.size, cp.root, i, leaf); err != nil {
				fail("CheckRecord(%d): %v", i, err)
			}
		}
		oldMsg, err := os.ReadFile(oldPath)
		if err != nil {
			fail("%v", err)
		}
		old := parseCheckpoint(openNote(oldMsg, logKey, nil).Text)
		if old.origin != cp.origin {
			fail("origin %q != %q", old.origin, cp.origin)
		}
		tp, err := tlog.ProveTree(cp.size, old.size, hr)
		if err != nil {
			fail("ProveTree: %v", err)
		}
		if err := tlog.CheckTree(tp, cp.size, cp.root, old.size, old.root); err != nil {
			fail("CheckTree: %v", err)
		}
		fmt.Printf("OK %s size %d: %d leaves proven, consistent with size %d\n",
			cp.origin, cp.size, len(strings.Split(idx, ",")), old.size)
	default:
		fmt.Fprintln(os.Stderr, "unknown subcommand")
		os.Exit(2)
	}
}
