// W3C Baggage: the codec (w3c/baggage.h) on the spec's examples and hostile
// input, and baggage as Context values (w3c/baggage_context.h).
#include <string>
#include <vector>

#include "context/context.h"
#include "gtest/gtest.h"
#include "w3c/baggage_context.h"

namespace reqctx {
namespace {

using Members = std::vector<BaggageMember>;

TEST(BaggageCodec, ParsesTheSpecExampleWithEncodingAndProperties) {
  EXPECT_EQ(ParseBaggage("userId=alice,serverNode=DF%2028,isProduction=false"),
            (Members{{"userId", "alice", ""},
                     {"serverNode", "DF 28", ""},
                     {"isProduction", "false", ""}}));
  EXPECT_EQ(ParseBaggage("userId=Am%C3%A9lie"),
            (Members{{"userId", "Am\xC3\xA9lie", ""}}));
  EXPECT_EQ(ParseBaggage("key1=value1;property1;property2, key2 = value2, "
                         "key3=value3; propertyKey=propertyValue"),
            (Members{{"key1", "value1", ";property1;property2"},
                     {"key2", "value2", ""},
                     {"key3", "value3", ";propertyKey=propertyValue"}}));
}

TEST(BaggageCodec, DropsMalformedMembersAndKeepsTheRest) {
  EXPECT_EQ(ParseBaggage("novalue,=x,k=%zz,a b=1,k2=a b,k3=\"q\",k4=v;,ok=1"),
            (Members{{"ok", "1", ""}}));
  EXPECT_EQ(ParseBaggage("k=%2"), Members{});
  EXPECT_EQ(ParseBaggage(",, ,\t,"), Members{});
  EXPECT_EQ(ParseBaggage(std::string("a=1,b=\0,c=3", 11)),
            (Members{{"a", "1", ""}, {"c", "3", ""}}));
}

TEST(BaggageCodec, LaterDuplicateWinsInPlace) {
  EXPECT_EQ(ParseBaggage("k=v,x=1,k=w;p"),
            (Members{{"k", "w", ";p"}, {"x", "1", ""}}));
}

TEST(BaggageCodec, FormatsPercentEncodedAndRoundTrips) {
  const Members m{{"tenant", "acme corp,50%;\\\"", ""}, {"t", "\xff\x01", ";p=1"}};
  const std::string h = FormatBaggage(m);
  EXPECT_EQ(h, "tenant=acme%20corp%2C50%25%3B%5C%22,t=%FF%01;p=1");
  EXPECT_EQ(ParseBaggage(h), m);
}

TEST(BaggageCodec, FormatSkipsInvalidKeysAndNonCanonicalProperties) {
  EXPECT_EQ(FormatBaggage({{"bad key", "v", ""}, {"", "v", ""}, {"k", "v", "p"},
                           {"j", "v", "; p"}}),
            "k=v,j=v");
}

TEST(BaggageCodec, LimitsOfMembersAndBytes) {
  std::string many;
  for (int i = 0; i < 200; ++i) many += "k" + std::to_string(i) + "=v,";
  const Members kept = ParseBaggage(many);
  ASSERT_EQ(kept.size(), kMaxBaggageMembers);
  EXPECT_EQ(kept.back().key, "k179");

  const std::string big(kMaxBaggageBytes, 'x');
  EXPECT_EQ(ParseBaggage("a=1,b=" + big + ",c=3"),
            (Members{{"a", "1", ""}, {"c", "3", ""}}));
  // Exactly at the limit is kept.
  const std::string exact = "k=" + std::string(kMaxBaggageBytes - 2, 'y');
  EXPECT_EQ(ParseBaggage(exact).size(), 1u);
  EXPECT_EQ(FormatBaggage(ParseBaggage(exact)), exact);
  EXPECT_EQ(ParseBaggage(exact + "y"), Members{});
}

TEST(BaggageCodec, HugeHostileHeaderIsBoundedAndSafe) {
  // 1 MiB of separators and junk: linear work, nothing kept past the limits.
  std::string junk;
  for (int i = 0; i < 65536; ++i) junk += "k=%,;=\t,";
  EXPECT_EQ(ParseBaggage(junk), Members{});
  std::string dup;
  for (int i = 0; i < 50000; ++i) dup += "k=" + std::to_string(i) + ",";
  EXPECT_EQ(ParseBaggage(dup), (Members{{"k", "49999", ""}}));
}

TEST(BaggageContext, GetAndWithBaggage) {
  Context root = Background();
  EXPECT_TRUE(Baggage(root).empty());
  EXPECT_EQ(Baggage(root).Get("tenant"), std::nullopt);

  Context a = WithBaggage(root, "tenant", "acme");
  Context b = WithBaggage(a, "criticality", "critical");
  Context c = WithBaggage(b, "tenant", "globex");
  EXPECT_EQ(Baggage(a).Get("tenant"), "acme");
  EXPECT_EQ(Baggage(b).Get("tenant"), "acme");
  EXPECT_EQ(Baggage(b).Get("criticality"), "critical");
  EXPECT_EQ(Baggage(c).Get("tenant"), "globex");
  EXPECT_EQ(Baggage(c).size(), 2u);
  EXPECT_EQ(Baggage(a).size(), 1u);  // Parents are unchanged.
  EXPECT_EQ(BaggageHeaderFor(c), "tenant=globex,criticality=critical");
  EXPECT_EQ(BaggageHeaderFor(root), "");
}

TEST(BaggageContext, FindStaysValidWhileTheBaggageLives) {
  const std::string* v = nullptr;
  Baggage kept;
  {
    auto [ctx, cancel] = WithCancel(WithBaggage(Background(), "k", "value"));
    kept = Baggage(ctx);
    v = kept.Find("k");
    cancel();
  }
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(*v, "value");  // The Context is gone; the Baggage keeps it.
}

TEST(BaggageContext, InvalidKeyOrOverLimitReturnsTheParent) {
  Context root = WithBaggage(Background(), "a", "1");
  EXPECT_EQ(Baggage(WithBaggage(root, "bad key", "v")).size(), 1u);
  EXPECT_EQ(Baggage(WithBaggage(root, "big", std::string(9000, 'x'))).size(), 1u);
  Context full = root;
  for (int i = 1; i < 200; ++i) full = WithBaggage(full, "k" + std::to_string(i), "v");
  EXPECT_EQ(Baggage(full).size(), kMaxBaggageMembers);
}

TEST(BaggageContext, WithBaggageMembersNormalizesAndHides) {
  Context a = WithBaggage(Background(), "tenant", "acme");
  Context b = WithBaggageMembers(a, {{"x", "1", ""}, {"bad key", "2", ""}, {"x", "3", ""}});
  EXPECT_EQ(Baggage(b).members(), (Members{{"x", "3", ""}}));
  EXPECT_TRUE(Baggage(WithBaggageMembers(a, {})).empty());
}

}  // namespace
}  // namespace reqctx
