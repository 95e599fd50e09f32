package pipeline

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
)

// pathDecoder is a type that decodes itself, reporting problems under
// path: a value that is written in several shapes (Depend) or whose type
// decides its fields (Step).
type pathDecoder interface {
	decodeAt(path string, raw json.RawMessage, errs *Errors)
}

// decodeValue decodes raw into v (a pointer) strictly: an unknown field at
// any level is an error, and every problem is recorded with its path
// instead of stopping at the first, as encoding/json would.
func decodeValue(path string, raw json.RawMessage, v any, errs *Errors) {
	decodeReflect(path, raw, reflect.ValueOf(v).Elem(), errs)
}

var (
	unmarshalerType  = reflect.TypeFor[json.Unmarshaler]()
	pathDecoderType  = reflect.TypeFor[pathDecoder]()
	structFieldCache sync.Map // reflect.Type → map[string]int
)

func decodeReflect(path string, raw json.RawMessage, rv reflect.Value, errs *Errors) {
	raw = bytes.TrimSpace(raw)
	pt := reflect.PointerTo(rv.Type())
	if pt.Implements(pathDecoderType) {
		rv.Addr().Interface().(pathDecoder).decodeAt(path, raw, errs)
		return
	}
	if pt.Implements(unmarshalerType) {
		if err := json.Unmarshal(raw, rv.Addr().Interface()); err != nil {
			errs.add(path, describeJSONError(err))
		}
		return
	}
	null := bytes.Equal(raw, []byte("null"))
	switch rv.Kind() {
	case reflect.Pointer:
		if null {
			rv.SetZero()
			return
		}
		nv := reflect.New(rv.Type().Elem())
		decodeReflect(path, raw, nv.Elem(), errs)
		rv.Set(nv)
	case reflect.Struct:
		if null {
			return
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			errs.addf(path, "want an object, got %s", jsonKind(raw))
			return
		}
		fields := structFields(rv.Type())
		for _, k := range sortedKeys(m) {
			idx, ok := fields[k]
			if !ok {
				errs.addf(join(path, k), "unknown field%s (known: %s)", suggest(k, sortedKeys(fields)), knownFields(fields))
				continue
			}
			decodeReflect(join(path, k), m[k], rv.Field(idx), errs)
		}
	case reflect.Slice:
		if null {
			return
		}
		var a []json.RawMessage
		if err := json.Unmarshal(raw, &a); err != nil {
			errs.addf(path, "want a list, got %s", jsonKind(raw))
			return
		}
		s := reflect.MakeSlice(rv.Type(), len(a), len(a))
		for i := range a {
			decodeReflect(fmt.Sprintf("%s[%d]", path, i), a[i], s.Index(i), errs)
		}
		rv.Set(s)
	case reflect.Map:
		if null {
			return
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			errs.addf(path, "want an object, got %s", jsonKind(raw))
			return
		}
		out := reflect.MakeMapWithSize(rv.Type(), len(m))
		et := rv.Type().Elem()
		for _, k := range sortedKeys(m) {
			ev := reflect.New(et).Elem()
			v := bytes.TrimSpace(m[k])
			// YAML writes PORT: 5432 without quotes; an environment
			// value is text whatever it looks like.
			if et.Kind() == reflect.String && len(v) > 0 && (jsonKind(v) == "number" || jsonKind(v) == "boolean") {
				ev.SetString(string(v))
			} else {
				decodeReflect(join(path, k), v, ev, errs)
			}
			out.SetMapIndex(reflect.ValueOf(k).Convert(rv.Type().Key()), ev)
		}
		rv.Set(out)
	default:
		if err := json.Unmarshal(raw, rv.Addr().Interface()); err != nil {
			errs.add(path, describeJSONError(err))
		}
	}
}

func structFields(t reflect.Type) map[string]int {
	if f, ok := structFieldCache.Load(t); ok {
		return f.(map[string]int)
	}
	fields := map[string]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = i
	}
	structFieldCache.Store(t, fields)
	return fields
}

func knownFields(fields map[string]int) string {
	return strings.Join(sortedKeys(fields), ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// jsonKind names the kind of a JSON value for messages.
func jsonKind(raw []byte) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "a list"
	case '"':
		return "a string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// describeJSONError turns encoding/json's message into one for people
// writing configs.
func describeJSONError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		want := te.Type.Kind().String()
		switch te.Type.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			want = "an integer"
		case reflect.Float32, reflect.Float64:
			want = "a number"
		case reflect.String:
			want = "a string"
		case reflect.Bool:
			want = "true or false"
		}
		return fmt.Sprintf("want %s, got %s", want, te.Value)
	}
	return err.Error()
}
